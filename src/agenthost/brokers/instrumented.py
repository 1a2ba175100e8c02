"""`InstrumentedBroker`: any `StreamBroker` with its calls timed into
`agenthost_broker_operation_duration_seconds{operation}` and, when tracing is on, a span per
call (`broker.publish`, ...), so no backend carries metrics code of its own.

`read` is handed through untimed: it lasts as long as the turn it follows, which the turn
histogram already measures.

`publish_nowait` (an in-process publish, made for every chunk of every stream) is timed one
call in `PUBLISH_SAMPLE`: the timed call is counted for itself and the untimed calls since the
last timed one, so the histogram's count trails the calls by less than `PUBLISH_SAMPLE` and its
buckets and sum are a sample. Two clock reads and a histogram update per chunk were about an
eighth of the Python a chunk costs on its way to the readers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from time import perf_counter
from typing import TYPE_CHECKING, Any, TypeVar

from agenthost.brokers.base import StreamBroker, StreamEvent
from agenthost.connections.redis_commands import Command
from agenthost.observability.metrics import Histogram, Metrics

if TYPE_CHECKING:
    from agenthost.observability.tracing import Tracing

__all__ = ["InstrumentedBroker"]

T = TypeVar("T")

PUBLISH_SAMPLE = 16
"""One `publish_nowait` in this many is timed (the first one is)."""


class InstrumentedBroker:
    """A `StreamBroker` that times and traces every call to `inner`; other attributes of
    the backend read through."""

    def __init__(
        self, inner: StreamBroker, metrics: Metrics, tracing: Tracing | None = None
    ) -> None:
        self.inner = inner
        self._tracing = tracing
        self._publish = metrics.broker_histogram("publish")
        self._exists = metrics.broker_histogram("exists")
        self._last = metrics.broker_histogram("last")
        self._since_timed = PUBLISH_SAMPLE - 1  # `publish_nowait` calls since the last timed one
        self._unseen = 0  # calls made untimed since the last timed one

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def _timed(self, name: str, call: Coroutine[Any, Any, T], histogram: Histogram) -> T:
        if self._tracing is not None:
            call = self._tracing.traced(call, "broker." + name)
        started = perf_counter()
        try:
            return await call
        finally:
            histogram.observe(perf_counter() - started)

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    def start(self, session_id: str, turn_id: str) -> None:
        self.inner.start(session_id, turn_id)

    async def exists(self, session_id: str, turn_id: str) -> bool:
        return await self._timed("exists", self.inner.exists(session_id, turn_id), self._exists)

    async def last(self, session_id: str, turn_id: str) -> StreamEvent | None:
        return await self._timed("last", self.inner.last(session_id, turn_id), self._last)

    async def publish(self, session_id: str, turn_id: str, event: StreamEvent) -> None:
        await self._timed("publish", self.inner.publish(session_id, turn_id, event), self._publish)

    def publish_nowait(self, session_id: str, turn_id: str, event: StreamEvent) -> bool:
        if self._tracing is not None:
            return False  # traced: every publish gets its span, through `publish`
        if self._since_timed < PUBLISH_SAMPLE - 1:
            self._since_timed += 1
            if not self.inner.publish_nowait(session_id, turn_id, event):
                return False  # timed by `publish`
            self._unseen += 1
            return True
        started = perf_counter()
        if not self.inner.publish_nowait(session_id, turn_id, event):
            return False
        self._publish.observe_for(perf_counter() - started, self._unseen + 1)
        self._since_timed = self._unseen = 0
        return True

    async def forget(self, session_id: str, turn_id: str | None = None) -> None:
        await self.inner.forget(session_id, turn_id)

    @property
    def inbox(self) -> str:
        return self.inner.inbox

    def expect_end(self, session_id: str, turn_id: str) -> asyncio.Future[StreamEvent]:
        return self.inner.expect_end(session_id, turn_id)

    def notify_end(self, inbox: str, session_id: str, turn_id: str, event: StreamEvent) -> None:
        self.inner.notify_end(inbox, session_id, turn_id, event)

    def ending_commands(
        self, inbox: str, session_id: str, turn_id: str, event: StreamEvent
    ) -> tuple[object, list[Command]] | None:
        return self.inner.ending_commands(inbox, session_id, turn_id, event)

    def drop_stale(self, session_id: str, turn_id: str) -> None:
        self.inner.drop_stale(session_id, turn_id)

    def read(
        self, session_id: str, turn_id: str, after: int, wait: float
    ) -> AsyncIterator[StreamEvent]:
        return self.inner.read(session_id, turn_id, after, wait)

    def __repr__(self) -> str:
        return f"InstrumentedBroker({self.inner!r})"
