"""Turn endings addressed to one process: how an `api` process learns that a plain
(non-streamed) turn it queued has ended, with one message per turn.

An `api` process waits for each plain turn it queued. Reading the turn's stream for that
costs a blocking read per event per turn (measured: 1.9 `XREAD` a turn through redis-py, a
connection each, the largest share of the api / worker split's CPU, and 500 connections
opened at once under a burst). Instead each process has an inbox; the queued turn names it
(`QueuedTurn.reply_to`) and the worker that ends the turn sends its final event there
(`StreamBroker.notify_end`). One reader per process takes every ending waiting in its inbox
at once and resolves the waiters' futures (`TurnEndings`), so a burst of endings costs one
read, not one per turn.

Best effort: an ending can be lost (Redis restarted between the send and the read); the
waiter then finds the turn's end in the session store (`TurnService` looks at the record
every few seconds while it waits), as it would for any turn whose stream it cannot read.
"""

from __future__ import annotations

import asyncio

import msgspec

from agenthost.brokers.base import StreamEvent

__all__ = ["Ending", "TurnEndings", "decode_ending", "encode_ending"]


class Ending(msgspec.Struct, array_like=True, frozen=True):
    """An inbox message: the turn and its final event."""

    session_id: str
    turn_id: str
    event: StreamEvent


encode_ending = msgspec.json.Encoder().encode
decode_ending = msgspec.json.Decoder(Ending).decode


class TurnEndings:
    """The turns this process waits for, each with its waiters' futures."""

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], list[asyncio.Future[StreamEvent]]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def expect(self, session_id: str, turn_id: str) -> asyncio.Future[StreamEvent]:
        """A future for the turn's final event; cancelling it forgets it."""
        key = (session_id, turn_id)
        future: asyncio.Future[StreamEvent] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        future.add_done_callback(lambda done: self._forget(key, done))
        return future

    def _forget(self, key: tuple[str, str], future: asyncio.Future[StreamEvent]) -> None:
        futures = self._waiting.get(key)
        if futures is None:
            return
        if future in futures:
            futures.remove(future)
        if not futures:
            del self._waiting[key]

    def deliver(self, ending: Ending) -> None:
        """Resolve every waiter of the turn (none: its waiter gave up, or never was here)."""
        for future in self._waiting.pop((ending.session_id, ending.turn_id), ()):
            if not future.done():
                future.set_result(ending.event)

    def fail_all(self, error: BaseException) -> None:
        """The broker closes: every waiter stops waiting with `error`."""
        waiting, self._waiting = self._waiting, {}
        for futures in waiting.values():
            for future in futures:
                if not future.done():
                    future.set_exception(error)
