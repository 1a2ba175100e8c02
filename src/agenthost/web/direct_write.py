"""Writes past the ASGI `send`, where the server offers them.

A server may put an object into a connection's scope under `DIRECT_WRITER_KEY` (a weak
reference, since the server's protocol holds the scope) that writes a streamed chunk straight
to the socket: `write_chunk_now(scope, body)` for a chunk of an SSE response,
`send_text_now(payload)` for a WebSocket text frame (with `buffered()`, the bytes its
socket has not taken, and `close_now(code, reason, grace)`, a close past back-pressure). Each
returns False when it cannot write at once (back-pressure, an extension that must transform
the frame, a closing connection): the caller then uses the ASGI `send`. agenthost's own
uvicorn protocols (`agenthost.runtime.protocols`) offer it; under any other server these
return None and everything goes through `send`.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

__all__ = ["DIRECT_WRITER_KEY", "chunk_writer", "frame_closer", "frame_writer", "write_buffer"]

DIRECT_WRITER_KEY = "agenthost.direct_writer"

ChunkWriter = Callable[[MutableMapping[str, Any], bytes], bool]
FrameWriter = Callable[[bytes], bool]
BufferSize = Callable[[], int]
FrameCloser = Callable[[int, str, float], bool]


def _writer(scope: MutableMapping[str, Any]) -> object | None:
    ref = scope.get(DIRECT_WRITER_KEY)
    return None if ref is None else ref()


def chunk_writer(scope: MutableMapping[str, Any]) -> ChunkWriter | None:
    """The server's direct writer of SSE chunks for this request, if it offers one."""
    found: ChunkWriter | None = getattr(_writer(scope), "write_chunk_now", None)
    return found


def frame_writer(scope: MutableMapping[str, Any]) -> FrameWriter | None:
    """The server's direct writer of WebSocket text frames for this connection, if any."""
    found: FrameWriter | None = getattr(_writer(scope), "send_text_now", None)
    return found


def write_buffer(scope: MutableMapping[str, Any]) -> BufferSize | None:
    """How many bytes sit in this WebSocket's transport write buffer, if the server says."""
    found: BufferSize | None = getattr(_writer(scope), "buffered", None)
    return found


def frame_closer(scope: MutableMapping[str, Any]) -> FrameCloser | None:
    """The server's `close_now(code, reason, grace)` for this WebSocket, if it offers one: the
    close frame goes out past back-pressure, and the connection is aborted after `grace`."""
    found: FrameCloser | None = getattr(_writer(scope), "close_now", None)
    return found
