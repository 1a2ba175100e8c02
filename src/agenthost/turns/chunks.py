"""A turn's chunks on their way to the stream broker: numbered in order, and coalesced so
tokens that arrive within a short window leave as one event (frames per second stay bounded
however fast the model writes).

One `ChunkFlusher` per process times the windows of all streams: a stream with text waiting
joins the flusher's current window, and one timer per window flushes every stream in it
(at most `coalesce_s` after its first token), instead of one timer per chunk of every stream.
The SSE writes of a window's streams are held until all of them are published, then made
back to back (`agenthost.core.write_batch`). Each pass is timed (`on_pass`, the server's
`agenthost_chunk_flush_seconds`): under thousands of streams a pass holds the event loop for
milliseconds, and the next window opens only after it, so its length is part of every
stream's gap between chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec

from agenthost.brokers.base import EventKind, StreamBroker, StreamEvent
from agenthost.core import write_batch
from agenthost.core.errors import AgentHostError
from agenthost.observability.logs import in_turn_context

__all__ = ["ChunkFlusher", "TurnStream", "chunk_data"]

log = logging.getLogger("agenthost.streams")

_encode = msgspec.json.encode
_RESET = _encode({"reason": "the turn is running again after its process stopped"})


def chunk_data(text: str) -> bytes:
    """A chunk event's data, `{"text": ...}` as JSON: the text encoded alone between fixed
    bytes, about half the cost of encoding the dict (this runs for every chunk)."""
    return b'{"text":' + _encode(text) + b"}"


class ChunkFlusher:
    """Flushes the streams with text waiting once per window of `coalesce_s` seconds (with
    no window: once per pass of the event loop, so tokens written in the same pass still
    leave as one event)."""

    __slots__ = ("_handle", "_opened", "_waiting", "coalesce_s", "on_pass")

    def __init__(
        self, coalesce_s: float, on_pass: Callable[[float, int, float], None] | None = None
    ) -> None:
        """`on_pass(seconds, streams, window)` is told of each pass: how long it took
        (publishing, then the held writes), how many streams it published, and how long
        after the window's first text it ended (the longest any of that text waited)."""
        self.coalesce_s = coalesce_s
        self.on_pass = on_pass
        self._waiting: list[TurnStream] = []
        self._handle: asyncio.Handle | None = None
        self._opened = 0.0  # when the current window's first text arrived (perf_counter)

    def add(self, stream: TurnStream) -> None:
        """`stream` has text waiting: flush it at the end of the current window."""
        self._waiting.append(stream)
        if self._handle is None:
            if self.on_pass is not None:
                self._opened = time.perf_counter()
            loop = asyncio.get_running_loop()
            if self.coalesce_s > 0:
                self._handle = loop.call_later(self.coalesce_s, self._flush_all)
            else:
                self._handle = loop.call_soon(self._flush_all)

    def _flush_all(self) -> None:
        self._handle = None
        waiting, self._waiting = self._waiting, []
        if self.on_pass is None:
            self._publish(waiting)
            return
        started = time.perf_counter()
        self._publish(waiting)
        ended = time.perf_counter()
        self.on_pass(ended - started, len(waiting), ended - self._opened)

    @staticmethod
    def _publish(waiting: list[TurnStream]) -> None:
        # The SSE chunks of the pass leave back to back once every stream is published
        # (`core.write_batch`: cheaper for this process and for the readers').
        with write_batch.held():
            for stream in waiting:
                try:
                    stream.flush()
                except Exception:  # one stream's failure must not hold back the others
                    # This timer runs in the context of the stream that opened the window.
                    in_turn_context(
                        stream.session_id,
                        stream.turn_id,
                        log.exception,
                        "could not publish a chunk of turn %s",
                        stream.turn_id,
                    )


class TurnStream:
    """The publishing side of one turn's stream; `sink` is the engine's chunk callback.

    A fresh turn numbers its events from 1. With `resume` (a turn id the client chose, which
    may have been streamed before by a process that died), the first event is numbered after
    the stream's newest one (or after the client's `after`, if the stream has expired); a run
    of the turn then starts with a `reset` event, and a replay of a finished turn publishes
    its final event only if the stream does not already end with one.
    """

    def __init__(
        self,
        broker: StreamBroker,
        session_id: str,
        turn_id: str,
        flusher: ChunkFlusher,
        *,
        claim: bool = True,
        resume: bool = False,
        after: int = 0,
    ) -> None:
        self.broker = broker
        self.session_id = session_id
        self.turn_id = turn_id
        self.flusher = flusher
        self.seq = 0
        self.ran = False
        self._resume = resume
        self._after = after
        self._pending: list[str] = []
        self._last: asyncio.Task[None] | None = None
        if claim:
            # Readers here are served from this process's memory.
            broker.start(session_id, turn_id)

    def started(self) -> None:
        """The engine holds the lease and runs the agent (the engine's `on_start`)."""
        self.ran = True
        if self._resume:
            self._chain(self._continue_numbering(reset=True))

    def sink(self, text: str) -> None:
        if not text:
            return
        if not self._pending:
            self.flusher.add(self)  # the first text since the last flush opens a window
        self._pending.append(text)

    def event(self, kind: EventKind, data: bytes) -> None:
        """Publish a non-text event (`tool`, `interrupt`) after the text before it."""
        self.flush()
        self._enqueue(kind, data)

    def flush(self) -> None:
        """Publish the text waiting (if any) as one chunk event."""
        if self._pending:
            text = "".join(self._pending)
            self._pending.clear()
            self._enqueue("chunk", chunk_data(text))

    def _enqueue(self, kind: EventKind, data: bytes) -> None:
        last = self._last
        if last is None or last.done():
            # Nothing before it is still on its way: an in-process broker takes the event
            # now, with no task (this runs for every chunk of every stream).
            event = StreamEvent(self.seq + 1, kind, data)
            if self.broker.publish_nowait(self.session_id, self.turn_id, event):
                self.seq += 1
                if last is not None:
                    self._last = None
                    if not last.cancelled():
                        last.exception()  # an earlier step's failure was already suffered
                return
        self._chain(self._publish(kind, data))

    def _chain(self, step: Coroutine[Any, Any, bool]) -> None:
        """Run publishing steps one after another, in the order they were asked for."""
        previous = self._last

        async def run() -> None:
            if previous is not None:
                with contextlib.suppress(AgentHostError):
                    await previous
            await step

        self._last = asyncio.ensure_future(run())

    async def _publish(self, kind: EventKind, data: bytes) -> bool:
        self.seq += 1
        await self.broker.publish(self.session_id, self.turn_id, StreamEvent(self.seq, kind, data))
        return True

    async def _continue_numbering(self, *, reset: bool) -> bool:
        """Number on from the stream's newest event; False if it already ended."""
        newest = await self.broker.last(self.session_id, self.turn_id)
        self.seq = max(newest.seq if newest is not None else 0, self._after)
        if reset and self.seq > 0:
            await self._publish("reset", _RESET)
        return newest is None or not newest.final

    async def finish(self, kind: EventKind, data: bytes) -> None:
        """Flush what is pending, then publish the final event and wait for all of it."""
        self.flush()  # the flusher finds nothing left when its window ends
        if self._resume and not self.ran:
            # A replay: another attempt streamed this turn; end the stream only if it did not.
            async def replay_final() -> bool:
                if await self._continue_numbering(reset=False):
                    await self._publish(kind, data)
                return True

            self._chain(replay_final())
        else:
            self._enqueue(kind, data)
        if self._last is not None:
            await self._last

    async def end_unrun(self, kind: EventKind, data: bytes) -> None:
        """End an attempt that never ran (withdrawn from the queue): its final event after
        the stream's newest, even where an earlier attempt's final event ends it, since this
        attempt's readers start after that one."""
        self.flush()

        async def publish() -> bool:
            await self._continue_numbering(reset=False)
            await self._publish(kind, data)
            return True

        self._chain(publish())
        if self._last is not None:
            await self._last
