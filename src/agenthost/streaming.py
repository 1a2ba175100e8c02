"""A turn's chunks on their way to the stream broker: numbered in order, and coalesced so
tokens that arrive within a short window leave as one event (frames per second stay bounded
however fast the model writes)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

import msgspec

from agenthost.brokers.base import EventKind, StreamBroker, StreamEvent
from agenthost.errors import AgentHostError

__all__ = ["TurnStream"]

_encode = msgspec.json.encode
_RESET = _encode({"reason": "the turn is running again after its process stopped"})


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
        coalesce_s: float,
        *,
        claim: bool = True,
        resume: bool = False,
        after: int = 0,
    ) -> None:
        self.broker = broker
        self.session_id = session_id
        self.turn_id = turn_id
        self.coalesce_s = coalesce_s
        self.seq = 0
        self.ran = False
        self._resume = resume
        self._after = after
        self._pending: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
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
        self._pending.append(text)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.coalesce_s, self._flush)

    def _flush(self) -> None:
        self._timer = None
        if self._pending:
            text = "".join(self._pending)
            self._pending.clear()
            self._enqueue("chunk", _encode({"text": text}))

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
        if self._timer is not None:
            self._timer.cancel()
        self._flush()
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
