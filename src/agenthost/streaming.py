"""A turn's chunks on their way to the stream broker: numbered in order, and coalesced so
tokens that arrive within a short window leave as one event (frames per second stay bounded
however fast the model writes)."""

from __future__ import annotations

import asyncio
import contextlib

import msgspec

from agenthost.brokers.base import EventKind, StreamBroker, StreamEvent
from agenthost.errors import AgentHostError

__all__ = ["TurnStream"]

_encode = msgspec.json.encode


class TurnStream:
    """The publishing side of one turn's stream; `sink` is the engine's chunk callback."""

    def __init__(
        self, broker: StreamBroker, session_id: str, turn_id: str, coalesce_s: float
    ) -> None:
        self.broker = broker
        self.session_id = session_id
        self.turn_id = turn_id
        self.coalesce_s = coalesce_s
        self.seq = 0
        self._pending: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._last: asyncio.Task[None] | None = None
        broker.start(session_id, turn_id)

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
        self.seq += 1
        event = StreamEvent(self.seq, kind, data)
        previous = self._last

        async def publish() -> None:
            if previous is not None:
                with contextlib.suppress(AgentHostError):
                    await previous
            await self.broker.publish(self.session_id, self.turn_id, event)

        self._last = asyncio.ensure_future(publish())

    async def finish(self, kind: EventKind, data: bytes) -> None:
        """Flush what is pending, then publish the final event and wait for all of it."""
        if self._timer is not None:
            self._timer.cancel()
        self._flush()
        self._enqueue(kind, data)
        assert self._last is not None
        await self._last
