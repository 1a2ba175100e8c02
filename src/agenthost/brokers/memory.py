"""`memory://`: streams of this process's turns, in memory, dropped `stream_ttl` after
they end. Also the local fan-out under the Redis broker: readers on the publishing process
never wait on Redis."""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from agenthost.brokers.base import Emit, StreamEvent
from agenthost.brokers.endings import Ending, TurnEndings
from agenthost.connections.redis_commands import Command
from agenthost.core.errors import StoreUnavailable

__all__ = ["LocalEvents", "MemoryBroker"]


class _Stream:
    __slots__ = ("closed", "ended_at", "events", "listeners", "remote", "waiters")

    def __init__(self) -> None:
        self.events: list[StreamEvent] = []
        self.waiters: list[asyncio.Future[None]] = []
        self.listeners: list[LocalEvents] = []
        self.ended_at: float | None = None
        self.closed = False
        # What a shared broker keeps for writing this stream elsewhere, made with its first
        # write there and gone with the stream (the Redis broker: its chunks' XADD head).
        self.remote: Any = None

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def deliver(self, event: StreamEvent) -> None:
        """Hand `event` to every reader that listens for it as it is published."""
        listeners = self.listeners
        stopped = False
        for listener in listeners:
            if not listener.deliver(event):
                stopped = True
        if stopped:
            self.listeners = [listener for listener in listeners if listener.listening]

    def end(self) -> None:
        """The broker closes, or the stream is deleted: every reader stops waiting."""
        self.closed = True
        self.wake()
        listeners, self.listeners = self.listeners, []
        for listener in listeners:
            listener.stop()


def _expire_waiter(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class LocalEvents:
    """One reader of a stream this process publishes, from event number `after` on.

    Pulled with `async for`, or pushed with `push(emit)`: then the code that publishes each
    event hands it to `emit`, and no task wakes per event. While the consumer is slow (`emit`
    returned an awaitable) the push waits for it and catches up from the stream's list, then
    listens again. Either way the reader ends after the final event, when nothing new
    arrives for `wait` seconds, or when the broker closes.
    """

    __slots__ = (
        "_clock",
        "_deadline",
        "_done",
        "_emit",
        "_ended",
        "_last_at",
        "_loop",
        "_puller",
        "_rest",
        "_stream",
        "after",
        "listening",
        "position",
        "wait",
    )

    def __init__(self, stream: _Stream | None, after: int, wait: float) -> None:
        self._stream = stream
        self.after = after
        self.wait = wait
        self.position = 0  # index into the stream's events of the next one to look at
        self.listening = False
        self._emit: Emit | None = None
        self._done: asyncio.Future[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rest: Awaitable[None] | None = None
        self._puller: AsyncIterator[StreamEvent] | None = None
        self._ended = False
        self._last_at = 0.0
        self._clock: Callable[[], float] = time.monotonic  # the loop's clock, once pushed

    def __aiter__(self) -> LocalEvents:
        return self

    def __anext__(self) -> Awaitable[StreamEvent]:
        if self._puller is None:
            self._puller = self._pull()
        return self._puller.__anext__()

    def _unread(self, stream: _Stream) -> Iterator[StreamEvent]:
        """The stream's events this reader has not had yet, as far as there are any (events
        appended while the caller waits between two of them are included)."""
        events = stream.events
        while self.position < len(events):
            event = events[self.position]
            self.position += 1
            if event.seq > self.after:
                self.after = event.seq
                yield event

    async def _pull(self) -> AsyncIterator[StreamEvent]:
        stream = self._stream
        if stream is None:
            return
        while True:
            for event in self._unread(stream):
                yield event
                if event.final:
                    return
            if stream.closed:
                return
            # A future and a timer handle per wait: cheaper than an Event and a timeout
            # context. A pushed reader (`push`) needs neither.
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            stream.waiters.append(waiter)
            timer = loop.call_later(self.wait, _expire_waiter, waiter)
            try:
                await waiter
            except TimeoutError:
                return
            finally:
                timer.cancel()

    async def push(self, emit: Emit) -> None:
        """Call `emit` with each event in order until the final one (see the class)."""
        stream = self._stream
        if stream is None:
            return
        loop = self._loop = asyncio.get_running_loop()
        self._clock = loop.time  # looked up once: `deliver` reads it for every event
        while True:
            # What is already there goes out first, waiting for the consumer as needed.
            for event in self._unread(stream):
                rest = emit(event)
                if rest is not None:
                    await rest
                if event.final:
                    return
            # Caught up: from now on the publisher hands each event over.
            done = self._done = loop.create_future()
            self._emit = emit
            self._last_at = loop.time()
            self.listening = True
            stream.listeners.append(self)
            self._deadline = loop.call_later(self.wait, self._check_quiet)
            try:
                await done
            finally:
                if self._deadline is not None:
                    self._deadline.cancel()
                    self._deadline = None
                self._unlisten()
                self._done = self._emit = None
            rest, self._rest = self._rest, None
            if rest is not None:
                await rest  # the consumer's last send had to wait
            if self._ended:
                return

    def deliver(self, event: StreamEvent) -> bool:
        """Called by the publisher with each new event; False: stop listening."""
        self.position += 1
        if event.seq <= self.after:
            return True
        done, emit = self._done, self._emit
        if done is None or emit is None or done.done():
            self.listening = False
            return False
        self.after = event.seq
        try:
            rest = emit(event)
        except Exception as exc:  # the consumer's failure is raised in its own task
            self.listening = False
            done.set_exception(exc)
            return False
        if event.kind != "chunk" and event.final:
            self._ended = True
        elif rest is None:
            self._last_at = self._clock()
            return True
        self._rest = rest
        self.listening = False
        done.set_result(None)
        return False

    def stop(self) -> None:
        """End the reader: the broker closes, or nothing arrived for `wait` seconds."""
        self._ended = True
        self._unlisten()
        done = self._done
        if done is not None and not done.done():
            done.set_result(None)

    def _unlisten(self) -> None:
        if self.listening:
            self.listening = False
            if self._stream is not None and self in self._stream.listeners:
                self._stream.listeners.remove(self)

    def _check_quiet(self) -> None:
        """One timer per `wait` seconds, not one per event."""
        loop = self._loop
        self._deadline = None
        if loop is None or self._done is None or self._done.done():
            return
        quiet = loop.time() - self._last_at
        if quiet >= self.wait:
            self.stop()
        else:
            self._deadline = loop.call_later(self.wait - quiet, self._check_quiet)


class MemoryBroker:
    def __init__(self, *, stream_ttl: float = 300.0) -> None:
        self.stream_ttl = stream_ttl
        self._streams: dict[tuple[str, str], _Stream] = {}
        # Streams as they ended, oldest first (an end is always the newest): expiry looks at
        # the front only, never at the streams still in their `stream_ttl`.
        self._ended: collections.deque[tuple[float, tuple[str, str], _Stream]]
        self._ended = collections.deque()
        # Endings reach this broker only: an inbox of this process.
        self.inbox = f"memory-{uuid.uuid4().hex}"
        self.endings = TurnEndings()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        for stream in self._streams.values():
            stream.end()
        self.endings.fail_all(StoreUnavailable("the stream broker closed"))

    def expect_end(self, session_id: str, turn_id: str) -> asyncio.Future[StreamEvent]:
        return self.endings.expect(session_id, turn_id)

    def notify_end(self, inbox: str, session_id: str, turn_id: str, event: StreamEvent) -> None:
        if inbox == self.inbox:
            self.endings.deliver(Ending(session_id, turn_id, event))

    def ending_commands(
        self, inbox: str, session_id: str, turn_id: str, event: StreamEvent
    ) -> tuple[object, list[Command]] | None:
        return None  # no Redis: `notify_end` delivers here

    def _expire(self) -> None:
        """Drop the streams that ended more than `stream_ttl` ago: those at the front of the
        ended ones (measured: a scan of every stream, once per 256 new ones, was a share of a
        queue worker's CPU per turn, as it keeps each plain turn's stream for `stream_ttl`)."""
        ended = self._ended
        cutoff = time.monotonic() - self.stream_ttl
        while ended and ended[0][0] < cutoff:
            at, key, stream = ended.popleft()
            # Dropped since, or started again and not ended at that time: not this entry's.
            if stream.ended_at == at and self._streams.get(key) is stream:
                del self._streams[key]

    def local(self, session_id: str, turn_id: str) -> bool:
        return (session_id, turn_id) in self._streams

    def start(self, session_id: str, turn_id: str) -> None:
        key = (session_id, turn_id)
        if key not in self._streams:
            if self._ended:
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

    def publish_local(self, session_id: str, turn_id: str, event: StreamEvent) -> _Stream:
        """Append `event` to this process's copy of the stream and hand it to the readers
        here; the stream (its `remote` is the shared broker's to use)."""
        stream = self._streams.get((session_id, turn_id))
        if stream is None:
            self.start(session_id, turn_id)
            stream = self._streams[(session_id, turn_id)]
        stream.events.append(event)
        if event.kind != "chunk" and event.final:
            stream.ended_at = now = time.monotonic()
            self._ended.append((now, (session_id, turn_id), stream))
        if stream.listeners:
            stream.deliver(event)
        if stream.waiters:
            stream.wake()
        return stream

    async def forget(self, session_id: str, turn_id: str | None = None) -> None:
        self.forget_local(session_id, turn_id)

    def forget_local(self, session_id: str, turn_id: str | None = None) -> None:
        """Drop this process's copy of the stream, and its readers end; or of every ended
        stream of the session (a scan, but deletes are rare and ended streams expire): a
        running one is its publisher's to drop once its readers have its error."""
        if turn_id is not None:
            keys = [(session_id, turn_id)]
        else:
            streams = self._streams
            keys = [k for k in streams if k[0] == session_id and streams[k].ended_at is not None]
        for key in keys:
            stream = self._streams.pop(key, None)
            if stream is not None:
                stream.end()

    def drop_stale(self, session_id: str, turn_id: str) -> None:
        stream = self._streams.get((session_id, turn_id))
        if stream is not None and stream.ended_at is not None:
            self.forget_local(session_id, turn_id)

    def read(
        self, session_id: str, turn_id: str, after: int, wait: float
    ) -> AsyncIterator[StreamEvent]:
        return LocalEvents(self._streams.get((session_id, turn_id)), after, wait)
