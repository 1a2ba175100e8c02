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

These subclasses, and the batch-accepting start-up (`agenthost.runtime.server`), read and
write uvicorn's and websockets' internals, which change between releases: this module lists
every method, attribute and parameter they rely on, and `lean_protocols_missing` says which
of them this install lacks. Only `agenthost.runtime.protocols` imports this module, and it
falls back to uvicorn's stock protocols when the import or the check fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import struct
import weakref
from collections.abc import Callable
from types import CodeType
from typing import Any, ClassVar, cast

import uvicorn
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import OPEN, Protocol
from websockets.streams import StreamReader

from agenthost.core import write_batch
from agenthost.core.deadline_sweep import DeadlineSweep
from agenthost.observability.metrics import Metrics
from agenthost.runtime.connection_limits import OVER_CAPACITY_KEY, ConnectionLimits
from agenthost.web.direct_write import DIRECT_WRITER_KEY

log = logging.getLogger(__name__)

__all__ = [
    "ConnectionGuard",
    "Deadlines",
    "LeanHttpToolsProtocol",
    "LeanWebSocketProtocol",
    "guard_missing",
    "lean_protocols_missing",
]


class ConnectionGuard(HttpToolsProtocol):
    """uvicorn's HTTP protocol with deadlines and a cap (`agenthost.runtime.connection_limits`):
    a request's headers must arrive within the header timeout of the connection (or of the
    next request's first byte), its body within the body timeout of the headers, else 408 and
    close; a connection past the cap is marked for the over-capacity gate, or closed at once
    past the probe reserve. Unconfigured (`limits` None), it is uvicorn's protocol. One timer
    per connection at most, only while a request is being read."""

    limits: ClassVar[ConnectionLimits | None] = None
    metrics: ClassVar[Metrics | None] = None
    deadlines: ClassVar[Deadlines | None] = None
    armed = False  # this connection has a deadline in `deadlines`
    over_capacity = False

    @classmethod
    def configured(cls, limits: ConnectionLimits, metrics: Metrics) -> type[ConnectionGuard]:
        """This class with `limits`, counting refusals in `metrics`."""
        return type(cls.__name__, (cls,), {"limits": limits, "metrics": metrics})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = self.limits
        if limits is None:
            return
        open_now = len(self.connections)
        if limits.refuses_at_once(open_now):
            self._refused("over_capacity")
            transport.abort()
            return
        if limits.over_capacity(open_now):
            self.over_capacity = True
            self._arm(limits.probe_header_timeout, "headers_timeout")
        else:
            self._arm(limits.header_timeout, "headers_timeout")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.limits is not None and not self.armed:
            self._arm(self.limits.header_timeout, "headers_timeout")

    def on_headers_complete(self) -> None:
        if self.over_capacity:
            cast(dict[str, Any], self.scope)[OVER_CAPACITY_KEY] = True
        super().on_headers_complete()
        if self.limits is not None:
            self._arm(self.limits.body_timeout, "body_timeout")

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()
        if self.over_capacity:
            # The gate never sees a WebSocket's handshake: refuse it here.
            self._refused("over_capacity")
            self.transport.write(_OVERLOADED_RESPONSE)
            self.transport.close()
            return
        super().handle_websocket_upgrade()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, delay: float, reason: str) -> None:
        deadlines = type(self).deadlines
        if deadlines is None or deadlines.loop is not self.loop:
            assert self.limits is not None
            deadlines = type(self).deadlines = Deadlines(self.loop, self.limits)
        deadlines.arm(self, delay, reason)
        self.armed = True

    def _disarm(self) -> None:
        if self.armed:
            self.armed = False
            deadlines = type(self).deadlines
            if deadlines is not None:
                deadlines.disarm(self)

    def _expired(self, reason: str) -> None:
        self.armed = False
        cycle = self.cycle
        if self.transport.is_closing() or (cycle is not None and cycle.response_started):
            return  # gone already, or the app answered without reading the whole body
        self._refused(reason)
        self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()

    def _refused(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.connection_refused(reason)


class Deadlines(DeadlineSweep[ConnectionGuard]):
    """The header and body deadlines of one event loop's connections, kept by one sweep
    (`agenthost.core.deadline_sweep`): enforced within a quarter of the shortest timeout
    (at most 0.25 s) after they are due, never before."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limits: ConnectionLimits) -> None:
        shortest = min(limits.header_timeout, limits.body_timeout, limits.probe_header_timeout)
        super().__init__(min(0.25, shortest / 4), _cut, loop)


def _cut(guard: ConnectionGuard, reason: str) -> None:
    """Answer 408 and close; a cut that fails aborts the connection instead."""
    try:
        guard._expired(reason)
    except Exception:
        log.exception("cutting a connection past its %s failed: aborting it", reason)
        with contextlib.suppress(Exception):
            guard.transport.abort()


def _raw_response(status: bytes, body: bytes, *extra: bytes) -> bytes:
    head = [b"HTTP/1.1 " + status, b"content-type: application/json"]
    head += [b"content-length: %d" % len(body), b"connection: close", *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


_TIMEOUT_RESPONSE = _raw_response(
    b"408 Request Timeout",
    b'{"error":{"code":"request_timeout","message":"the request did not arrive in time"}}',
)
_OVERLOADED_RESPONSE = _raw_response(
    b"503 Service Unavailable",
    b'{"error":{"code":"overloaded","message":"this process has as many connections as it '
    b'takes; try again"}}',
    b"retry-after: 1",
)


class LeanHttpToolsProtocol(ConnectionGuard):
    """uvicorn's HTTP protocol, freed as soon as it hands a connection to the WebSocket
    protocol. It and its parser point at each other, so without this the pair (about 3 KB,
    with the request's scope) waits for the garbage collector's next full pass, which the
    server's tuned thresholds make rare: at 10,000 idle WebSockets that was 4 KB each."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        # Weak: this protocol holds the request's cycle, which holds the scope.
        cast(dict[str, Any], self.scope)[DIRECT_WRITER_KEY] = weakref.ref(self)

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
        # Held to the end of the flusher's pass, if in one (`core.write_batch`).
        write_batch.write(self.transport, b"%x\r\n%s\r\n" % (len(body), body))
        return True

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        # The transport now feeds the WebSocket protocol; this one never parses again.
        self.__dict__.pop("parser", None)


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # the handshake was accepted: the app will run
            # Weak, as for HTTP: the web layer finds `send_text_now` here.
            cast(dict[str, Any], scope)[DIRECT_WRITER_KEY] = weakref.ref(self)

    def start_keepalive(self) -> None:
        # Called once the 101 response has been written: the handshake is over.
        self.__dict__.pop("request", None)
        self.__dict__.pop("response", None)
        conn = self.conn
        if conn.state is OPEN and not conn.reader.buffer:
            # No frame byte has arrived yet (a client waits for the 101), so a fresh frame
            # parser starts exactly where the handshake's would go on, without its request.
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

    def buffered(self) -> int:
        """Bytes written and not yet taken by the socket (the transport's write buffer)."""
        return self.transport.get_write_buffer_size()

    def close_now(self, code: int, reason: str, grace: float) -> bool:
        """Send the close frame at once, ahead of the flow control a client that never reads
        holds shut, and abort the connection if it is still open `grace` seconds later (its
        buffer would never drain). False: not open; close through the ASGI `send`."""
        if (
            self.close_sent
            or self.disconnected
            or not self.handshake_complete
            or self.conn.state is not OPEN
        ):
            return False
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.loop.call_later(grace, self._abort_if_open)
        return True

    def _abort_if_open(self) -> None:
        if not self.disconnected:
            self.transport.abort()


# What ConnectionGuard (which the stock protocols get too) relies on: methods it overrides or
# calls, and attributes it reads, by the function that sets them.
_GUARD_METHODS: tuple[tuple[type, str], ...] = (
    (
        HttpToolsProtocol,
        "connection_made connection_lost on_message_begin on_headers_complete "
        "on_message_complete handle_websocket_upgrade",
    ),
)
_GUARD_NAMES: tuple[tuple[Callable[..., Any], str], ...] = (
    (HttpToolsProtocol.__init__, "loop connections transport cycle scope"),
    (RequestResponseCycle.__init__, "response_started"),
)
# What the lean protocols and the batch-accepting start-up (`runtime.server`) rely on. Methods
# they override or call, by the class that defines them:
_METHODS: tuple[tuple[type, str], ...] = (
    *_GUARD_METHODS,  # on_headers_complete and handle_websocket_upgrade among them
    (WebSocketsSansIOProtocol, "handle_connect start_keepalive"),
    (Protocol, "parse send_close data_to_send"),
    (uvicorn.Config, "bind_socket"),
)
# Attributes they read or write, by the function that sets (or calls) them there:
_NAMES: tuple[tuple[Callable[..., Any], str], ...] = (
    *_GUARD_NAMES,
    (HttpToolsProtocol.__init__, "cycle flow transport parser scope"),
    (
        RequestResponseCycle.__init__,
        "scope response_started response_complete chunked_encoding disconnected",
    ),
    (FlowControl.__init__, "write_paused"),
    (
        WebSocketsSansIOProtocol.__init__,
        "close_sent disconnected handshake_complete initial_response writable conn transport "
        "queue loop",
    ),
    (WebSocketsSansIOProtocol.handle_connect, "scope request response"),
    # The handshake is over when `send` has written the 101 and starts the pings.
    (WebSocketsSansIOProtocol.send, "start_keepalive"),
    (Protocol.__init__, "state extensions reader parser"),
    (StreamReader.__init__, "buffer"),
    # The batch start-up does what uvicorn's own does, with the same names.
    (
        uvicorn.Server.startup,
        "lifespan startup should_exit state http_protocol_class server_state backlog servers "
        "started",
    ),
)
# Keyword arguments the batch start-up builds the HTTP protocol with:
_PARAMETERS = (HttpToolsProtocol.__init__, "config server_state app_state")


def _names(code: CodeType) -> set[str]:
    """The attribute and global names `code` uses, with those of the functions inside it."""
    names = set(code.co_names)
    for inner in code.co_consts:
        if isinstance(inner, CodeType):
            names |= _names(inner)
    return names


def _where(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _missing(
    methods: tuple[tuple[type, str], ...], attributes: tuple[tuple[Callable[..., Any], str], ...]
) -> list[str]:
    missing = [
        f"{_where(cls)}.{name}"
        for cls, names in methods
        for name in names.split()
        if not callable(getattr(cls, name, None))
    ]
    for function, names in attributes:
        code = getattr(function, "__code__", None)
        found = _names(code) if code is not None else set()
        missing += [f"{_where(function)}: {name}" for name in names.split() if name not in found]
    return list(dict.fromkeys(missing))  # a name both lists hold, once


def guard_missing() -> list[str]:
    """What ConnectionGuard needs that this uvicorn lacks (empty: all there)."""
    return _missing(_GUARD_METHODS, _GUARD_NAMES)


def lean_protocols_missing() -> list[str]:
    """What the lean protocols need that this uvicorn or websockets lacks (empty: all
    there), as `module.Class.method` or `module.Class.function: name`."""
    missing = _missing(_METHODS, _NAMES)
    function, names = _PARAMETERS
    parameters = inspect.signature(function).parameters
    missing += [f"{_where(function)}: {name}" for name in names.split() if name not in parameters]
    return missing
