"""Starting a streamed turn, for SSE and WebSocket alike.

The turn runs in its own task and publishes to the stream broker; the caller reads the
broker. A turn id the client chose (`Idempotency-Key`, or a WebSocket frame's `turn_id`) makes
the request resumable anywhere: sent again with the last event number seen, it replays a
completed turn's events after that number, follows the turn if it is running on a live process,
and runs it again (after a `reset` event) if the process running it died.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from agenthost.auth.principal import public_session_id
from agenthost.brokers.base import EventKind, StreamEvent
from agenthost.errors import AgentHostError
from agenthost.ids import new_turn_id
from agenthost.logs import bind_turn
from agenthost.streaming import TurnStream
from agenthost.wire import ErrorDetail, TurnOut

if TYPE_CHECKING:
    from agenthost.app import API

__all__ = ["OnDisconnect", "StreamedTurn", "start_streamed_turn"]

log = logging.getLogger("agenthost.streams")

OnDisconnect = Literal["continue", "cancel"]

_encode = msgspec.json.encode

_CLIENT_GONE = "the client disconnected (on_disconnect=cancel)"


class StreamedTurn:
    """A streamed turn: its id, its events from the asked position, and its running task
    (None when a completed turn is only replayed)."""

    __slots__ = ("api", "events", "session_id", "task", "turn_id")

    def __init__(
        self,
        api: API,
        session_id: str,
        turn_id: str,
        events: AsyncIterator[StreamEvent],
        task: asyncio.Task[None] | None,
    ) -> None:
        self.api = api
        self.session_id = session_id
        self.turn_id = turn_id
        self.events = events
        self.task = task

    def cancel(self) -> None:
        """The client left and asked for `on_disconnect=cancel`: stop the turn if it runs here
        (it ends as failed/interrupted, its user message kept)."""
        task = self.task
        if task is None or task.done():
            return
        engine = self.api.engine
        if engine is None or not engine.cancel_turn(self.session_id, self.turn_id, _CLIENT_GONE):
            task.cancel()  # still waiting for the lease: it never starts


async def start_streamed_turn(
    api: API,
    session_id: str,
    turn_id: str | None,
    message: str,
    *,
    metadata: dict[str, Any] | None,
    on_busy: Literal["reject", "enqueue", "interrupt"],
    after: int = 0,
) -> StreamedTurn:
    """Admit, start (or rejoin) the turn and return its events after `after`."""
    engine = api._engine
    broker = api.broker
    engine.check_admission()
    if turn_id is None:
        turn_id = new_turn_id()
        resume = False
        claim = True
    else:
        record = await api.store.get_turn(session_id, turn_id)
        if record is not None and record.status == "completed":
            events = await api.turn_events(session_id, turn_id, after)
            return StreamedTurn(api, session_id, turn_id, events, None)
        resume = True
        # Where another process already streams it, read its stream rather than a local one.
        claim = record is None or not await broker.exists(session_id, turn_id)
    bind_turn(session_id, turn_id)  # this request's log lines name the turn
    stream = TurnStream(
        broker,
        session_id,
        turn_id,
        api.chunk_flusher,
        claim=claim,
        resume=resume,
        after=after,
    )
    tid = turn_id

    async def run() -> None:
        kind: EventKind
        try:
            record = await engine.run_turn(
                session_id,
                message,
                turn_id=tid,
                metadata=metadata,
                on_busy=on_busy,
                on_chunk=stream.sink,
                on_start=stream.started,
                attach=resume,
            )
            public = public_session_id(record.session_id)
            kind, data = "done", _encode(TurnOut(public, tid, record.response or ""))
        except AgentHostError as exc:
            kind, data = "error", _encode(ErrorDetail(exc.code, exc.message))
        try:
            await stream.finish(kind, data)
        except AgentHostError as exc:
            # Local readers have it; a reader elsewhere falls back to the turn record.
            log.warning("could not publish the end of turn %s: %s", tid, exc)

    task = asyncio.ensure_future(run())
    api.keep(task)
    events = broker.read(session_id, turn_id, after, api._stream_wait)
    return StreamedTurn(api, session_id, turn_id, events, task)
