"""uvicorn's HTTP and sans-I/O WebSocket protocols, holding less and writing chunks directly.

Memory. After the handshake, uvicorn keeps the upgrade request and the 101 response
(headers and all), and the `websockets` parser keeps the request too, in the frame of the
generator that goes on to parse the connection's frames. Nothing reads them again. Dropping
all three saves about 4 KB per connection, which counts at 10,000 idle WebSockets on one
process (`benchmarks/idle_websockets.py`). The HTTP protocol that served the upgrade drops
its parser, so it is freed at once.

Streamed chunks. Both protocols write a streamed chunk straight to the socket when nothing
in the way needs the general path (`send_text_now`: a WebSocket text frame;
`write_chunk_now`: a chunk of an SSE response): per chunk that saves the ASGI `send`
coroutines (and for WebSocket the frame object `websockets` builds), a fifth of the chunk's
CPU. Anything else (back-pressure, an extension such as permessage-deflate, a closing
connection) goes through the ASGI `send` as before.
"""

from __future__ import annotations

import contextlib
import struct
import weakref
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import OPEN, Protocol

__all__ = ["HTTP_PROTOCOL_KEY", "LeanHttpToolsProtocol", "LeanWebSocketProtocol"]

HTTP_PROTOCOL_KEY = "agenthost.http_protocol"
"""The scope key of a weak reference to the `LeanHttpToolsProtocol` serving the request (weak:
the protocol holds the request's cycle, which holds the scope)."""


class LeanHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, freed as soon as it hands a connection to the WebSocket
    protocol. It and its parser point at each other, so without this the pair (about 3 KB,
    with the request's scope) waits for the garbage collector's next full pass, which the
    server's tuned thresholds make rare: at 10,000 idle WebSockets that was 4 KB each."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cast(dict[str, Any], self.scope)[HTTP_PROTOCOL_KEY] = weakref.ref(self)

    def write_chunk_now(self, scope: dict[str, Any], body: bytes) -> bool:
        """Write `body` as one chunk of the chunked response to the request of `scope`, as
        uvicorn's `send` would, if that response has started and the socket applies no
        back-pressure. False: nothing was written; send it through the ASGI `send`, which
        handles every other case (a pipelined request, a paused or lost connection)."""
        cycle = self.cycle
        if (
            cycle is None
            or cycle.scope is not scope
            or not cycle.response_started
            or cycle.response_complete
            or not cycle.chunked_encoding
            or cycle.disconnected
            or self.flow.write_paused
        ):
            return False
        self.transport.write(b"%x\r\n%s\r\n" % (len(body), body))
        return True

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        # The transport now feeds the WebSocket protocol; this one never parses again.
        self.__dict__.pop("parser", None)


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    def start_keepalive(self) -> None:
        # Called once the 101 response has been written: the handshake is over.
        self.__dict__.pop("request", None)
        self.__dict__.pop("response", None)
        conn = self.conn
        # Internals of `websockets`: if a release renames them, keep its parser as it is.
        with contextlib.suppress(AttributeError):
            if conn.state is OPEN and not conn.reader.buffer:
                # No frame byte has arrived yet (a client waits for the 101), so a fresh
                # frame parser starts exactly where the handshake's would go on, without
                # its request.
                conn.parser = Protocol.parse(conn)
                next(conn.parser)
        super().start_keepalive()

    def send_text_now(self, payload: bytes) -> bool:
        """Write `payload` (UTF-8 JSON) as one unmasked, unfragmented text frame, as
        `websockets` would, if the connection is open, no extension (permessage-deflate)
        must transform it and the socket is not applying back-pressure. False: nothing was
        written; send it through the ASGI `send`, which handles every other case."""
        if (
            self.close_sent
            or self.disconnected
            or not self.handshake_complete
            or self.initial_response is not None
            or not self.writable.is_set()
            or self.conn.state is not OPEN
            or self.conn.extensions
        ):
            return False
        size = len(payload)
        if size < 126:
            header = bytes((0x81, size))
        elif size < 65536:
            header = struct.pack("!BBH", 0x81, 126, size)
        else:
            header = struct.pack("!BBQ", 0x81, 127, size)
        self.transport.write(header + payload)
        return True
