"""A turn's stream events as a server-sent events response, written straight to the ASGI
server: one `send` per event and one task per response to notice the client leaving, instead
of a streaming response's task group and its wrappers (this runs for every chunk of
thousands of streams). Where the broker pushes events (a turn this process runs), the
publisher's own call runs the `send` (`send_eagerly`): no task wakes per chunk unless the
client reads slowly, and where the server offers a direct writer (agenthost's own HTTP
protocol does) the event is written straight to the socket, past the `send` coroutines
(`agenthost.web.direct_write`).

The same response writes the client adapters' streams (`agenthost.web.adapters`): each
passes a `frame` that turns one event into its protocol's bytes (empty: nothing to send) and
its own headers, so every protocol streams through this one writer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from agenthost.brokers.base import StreamEvent, forward
from agenthost.observability.metrics import Metrics
from agenthost.web.direct_write import chunk_writer
from agenthost.web.eager_send import send_eagerly
from agenthost.web.requests import watch_disconnect

__all__ = ["SSE_HEADERS", "Frame", "SSEResponse", "native_frame"]

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]

Frame = Callable[[StreamEvent], bytes]
"""One event as the bytes a protocol writes for it (b"": nothing)."""


def native_frame(event: StreamEvent) -> bytes:
    """agenthost's own SSE: `id`, `event` and `data` lines."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.seq, event.kind.encode(), event.data)


class SSEResponse(Response):
    """`id: <seq>`, `event: <kind>`, `data: <json>` per event until the final one.
    `on_gone` is called if the client leaves before the end."""

    def __init__(
        self,
        events: AsyncIterator[StreamEvent],
        metrics: Metrics,
        on_gone: Callable[[], None] | None = None,
        *,
        frame: Frame = native_frame,
        headers: list[tuple[bytes, bytes]] = SSE_HEADERS,
    ) -> None:
        self.events = events
        self.frame = frame
        self.raw_headers = headers
        self.metrics = metrics
        self.on_gone = on_gone
        self.status_code = 200
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        streaming = asyncio.current_task()
        gone = False

        def left() -> None:
            nonlocal gone
            gone = True
            if streaming is not None:
                streaming.cancel()

        watcher = watch_disconnect(receive, left)
        self.metrics.open_streams += 1
        ended = False

        # Written straight to the socket where the server offers it and nothing stands in
        # the way; else through `send`.
        write_now = chunk_writer(scope)
        frame = self.frame

        def emit(event: StreamEvent) -> Awaitable[None] | None:
            body = frame(event)
            if not body:
                return None
            if write_now is not None and write_now(scope, body):
                return None
            return send_eagerly(
                send({"type": "http.response.body", "body": body, "more_body": True})
            )

        try:
            await forward(self.events, emit)
            ended = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone or streaming is None:
                raise
            streaming.uncancel()  # the client left: nothing more to send
        finally:
            watcher.cancel()
            self.metrics.open_streams -= 1
            if not ended and self.on_gone is not None:
                self.on_gone()
