"""A turn's stream events as a server-sent events response, written straight to the ASGI
server: one `send` per event and one task per response to notice the client leaving, instead
of a streaming response's task group and its wrappers (this runs for every chunk of
thousands of streams). Where the broker pushes events (a turn this process runs), the
publisher's own call runs the `send` (`send_eagerly`): no task wakes per chunk unless the
client reads slowly, and where the server offers a direct writer (agenthost's own HTTP
protocol does) the event is written straight to the socket, past the `send` coroutines
(`agenthost.web.direct_write`).

While no event comes (a model that thinks before its first token, a turn followed from
another process), a `: ping` comment line goes out every `heartbeat_s` seconds, so proxies
and clients with idle timeouts keep the stream open; one timer per interval per stream, not
per event.

The same response writes the client adapters' streams (`agenthost.web.adapters`): each
passes a `frame` that turns one event into its protocol's bytes (empty: nothing to send) and
its own headers, so every protocol streams through this one writer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import get_args

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from agenthost.brokers.base import EventKind, StreamEvent, forward
from agenthost.observability.metrics import Metrics
from agenthost.web.direct_write import chunk_writer
from agenthost.web.eager_send import send_eagerly
from agenthost.web.requests import watch_disconnect

__all__ = ["SSE_HEADERS", "Frame", "SSEResponse", "native_frame"]

_PING = b": ping\n\n"
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]

Frame = Callable[[StreamEvent], bytes]
"""One event as the bytes a protocol writes for it (b"": nothing)."""


# Each kind's frame with its `event:` line already in (one format per event, not two).
_FRAMES = {
    kind: b"id: %%d\nevent: %s\ndata: %%s\n\n" % kind.encode() for kind in get_args(EventKind)
}


def native_frame(event: StreamEvent) -> bytes:
    """agenthost's own SSE: `id`, `event` and `data` lines."""
    return _FRAMES[event.kind] % (event.seq, event.data)


class SSEResponse(Response):
    """`id: <seq>`, `event: <kind>`, `data: <json>` per event until the final one, and
    `: ping` after `heartbeat_s` seconds without one. `on_gone` is called if the client
    leaves before the end."""

    def __init__(
        self,
        events: AsyncIterator[StreamEvent],
        metrics: Metrics,
        heartbeat_s: float = 15.0,
        on_gone: Callable[[], None] | None = None,
        *,
        frame: Frame = native_frame,
        headers: list[tuple[bytes, bytes]] = SSE_HEADERS,
    ) -> None:
        self.events = events
        self.frame = frame
        self.raw_headers = headers
        self.metrics = metrics
        self.heartbeat_s = heartbeat_s
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

        sent = 0  # events sent: the heartbeat pings when this has not moved for a tick
        seen = 0
        loop = asyncio.get_running_loop()
        pinging: asyncio.Future[None] | None = None
        ticker: asyncio.TimerHandle | None = None

        def emit(event: StreamEvent) -> Awaitable[None] | None:
            nonlocal sent
            sent += 1
            body = frame(event)
            if not body:
                return None
            if write_now is not None and write_now(scope, body):
                return None
            return send_eagerly(
                send({"type": "http.response.body", "body": body, "more_body": True})
            )

        def tick() -> None:
            nonlocal seen, ticker, pinging
            ticker = loop.call_later(self.heartbeat_s, tick)
            if sent != seen or (pinging is not None and not pinging.done()):
                seen = sent
                return
            if write_now is not None and write_now(scope, _PING):
                return
            try:
                rest = send_eagerly(
                    send({"type": "http.response.body", "body": _PING, "more_body": True})
                )
            except Exception:  # the client left: the disconnect watcher ends the response
                return
            if rest is not None:  # the client reads slowly: finish it in a task
                pinging = asyncio.ensure_future(_quietly(rest))

        ticker = loop.call_later(self.heartbeat_s, tick)
        try:
            await forward(self.events, emit)
            ended = True
            ticker.cancel()
            if pinging is not None:
                await pinging  # nothing may follow the end of the body
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone or streaming is None:
                raise
            streaming.uncancel()  # the client left: nothing more to send
        finally:
            if ticker is not None:
                ticker.cancel()
            if pinging is not None:
                pinging.cancel()
            watcher.cancel()
            self.metrics.open_streams -= 1
            if not ended and self.on_gone is not None:
                self.on_gone()


async def _quietly(send: Awaitable[None]) -> None:
    """Finish a heartbeat's send; a client gone meanwhile is the disconnect watcher's news."""
    with contextlib.suppress(Exception):
        await send
