"""`memory://`: streams of this process's turns, in memory, dropped `stream_ttl` after
they end. Also the local fan-out under the Redis broker: readers on the publishing process
never wait on Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from agenthost.brokers.base import StreamEvent

__all__ = ["MemoryBroker"]


class _Stream:
    __slots__ = ("ended_at", "events", "waiters")

    def __init__(self) -> None:
        self.events: list[StreamEvent] = []
        self.waiters: list[asyncio.Future[None]] = []
        self.ended_at: float | None = None

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


def _expire_waiter(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class MemoryBroker:
    def __init__(self, *, stream_ttl: float = 300.0) -> None:
        self.stream_ttl = stream_ttl
        self._streams: dict[tuple[str, str], _Stream] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        for stream in self._streams.values():
            stream.wake()

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.stream_ttl
        for key in [k for k, s in self._streams.items() if s.ended_at and s.ended_at < cutoff]:
            del self._streams[key]

    def local(self, session_id: str, turn_id: str) -> bool:
        return (session_id, turn_id) in self._streams

    def start(self, session_id: str, turn_id: str) -> None:
        key = (session_id, turn_id)
        if key not in self._streams:
            if len(self._streams) % 256 == 0:
                self._expire()
            self._streams[key] = _Stream()

    async def exists(self, session_id: str, turn_id: str) -> bool:
        return self.local(session_id, turn_id)

    async def last(self, session_id: str, turn_id: str) -> StreamEvent | None:
        return self.last_local(session_id, turn_id)

    def last_local(self, session_id: str, turn_id: str) -> StreamEvent | None:
        stream = self._streams.get((session_id, turn_id))
        return stream.events[-1] if stream is not None and stream.events else None

    async def publish(self, session_id: str, turn_id: str, event: StreamEvent) -> None:
        self.publish_local(session_id, turn_id, event)

    def publish_nowait(self, session_id: str, turn_id: str, event: StreamEvent) -> bool:
        self.publish_local(session_id, turn_id, event)
        return True

    def publish_local(self, session_id: str, turn_id: str, event: StreamEvent) -> None:
        self.start(session_id, turn_id)
        stream = self._streams[(session_id, turn_id)]
        stream.events.append(event)
        if event.final:
            stream.ended_at = time.monotonic()
        if stream.waiters:
            stream.wake()

    async def read(
        self, session_id: str, turn_id: str, after: int, wait: float
    ) -> AsyncIterator[StreamEvent]:
        stream = self._streams.get((session_id, turn_id))
        if stream is None:
            return
        position = 0
        while True:
            events = stream.events
            while position < len(events):
                event = events[position]
                position += 1
                if event.seq > after:
                    yield event
                    if event.final:
                        return
            # A future and a timer handle per wait: cheaper than an Event and a timeout
            # context, and this runs once per event of every stream.
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            stream.waiters.append(waiter)
            timer = loop.call_later(wait, _expire_waiter, waiter)
            try:
                await waiter
            except TimeoutError:
                return
            finally:
                timer.cancel()
