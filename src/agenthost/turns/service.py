"""The turn service: what the web layer (HTTP, SSE, WebSocket) asks of the turn layer.

It admits a tenant's turn through its limits, runs a plain turn on the engine, starts a
streamed turn in its own task that publishes to the stream broker, and reads a turn's events
back from wherever they are. A turn id the client chose (`Idempotency-Key`, or a WebSocket
frame's `turn_id`) makes a streamed request resumable anywhere: sent again with the last event
number seen, it replays a completed turn's events after that number, follows the turn if it
runs on a live process, and runs it again (after a `reset` event) if the process running it
died. A streamed turn goes on when its reader leaves (unless asked to stop), so it commits.

The client adapters' resume endpoints name a turn by id alone (no request body): `follow`
replays it, follows it where it runs, or runs it again from its recorded message when its
process died, the same three outcomes as a native request sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import msgspec

from agenthost.auth.principal import Principal, public_session_id
from agenthost.brokers.base import EventKind, StreamBroker, StreamEvent
from agenthost.core.deadline_sweep import DeadlineSweep
from agenthost.core.errors import (
    AgentHostError,
    EventBeyondEnd,
    QueueFull,
    SessionBusy,
    TurnInterrupted,
    TurnNotFound,
    error_for,
)
from agenthost.core.ids import new_turn_id
from agenthost.observability.logs import bind_turn
from agenthost.observability.metrics import Metrics
from agenthost.queue.base import QueuedTurn, WorkQueue, tenant_of
from agenthost.ratelimit.gate import TurnGate
from agenthost.stores.base import SessionStore, TurnRecord, key_reused
from agenthost.turns.chunks import ChunkFlusher, TurnStream
from agenthost.turns.engine import TurnEngine
from agenthost.turns.fingerprint import request_fingerprint
from agenthost.turns.payloads import ErrorDetail, TurnOut, error_event_data, turn_out

__all__ = ["OnBusy", "OnDisconnect", "StreamEnded", "StreamedTurn", "TurnEnd", "TurnService"]

log = logging.getLogger("agenthost.streams")

OnBusy = Literal["reject", "enqueue", "interrupt"]
OnDisconnect = Literal["continue", "cancel"]

_encode = msgspec.json.encode

TurnEnd = Callable[[str, str, TurnRecord | None, AgentHostError | None], Awaitable[None]]
"""Told when a background turn ends: session id, turn id, and its record or its error."""

_CLIENT_GONE = "the client disconnected (on_disconnect=cancel)"
_WITHDRAWN = "the turn was cancelled before it ran"
_SESSION_DELETED = "its session was deleted before the turn ran"


class StreamEnded(Exception):
    """A resume after the final event of a finished stream: there is nothing more to send.
    `final` is that event (the web layer answers SSE with 204, a WebSocket with the final
    event again)."""

    def __init__(self, final: StreamEvent) -> None:
        super().__init__(f"the stream ended at event {final.seq}")
        self.final = final


class StreamedTurn:
    """A streamed turn: its id, its events from the asked position, its running task
    (None when a completed turn is only replayed), and whether it got its session's lease."""

    __slots__ = ("admitted", "engine", "events", "interrupt", "session_id", "task", "turn_id")

    def __init__(
        self,
        engine: TurnEngine,
        session_id: str,
        turn_id: str,
        events: AsyncIterator[StreamEvent],
        task: asyncio.Task[None] | None,
        admitted: asyncio.Future[None] | None = None,
        interrupt: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.interrupt = interrupt
        self.session_id = session_id
        self.turn_id = turn_id
        self.events = events
        self.task = task
        self.admitted = admitted

    async def admission(self) -> None:
        """Wait until the turn holds its session's lease (or has its answer already); raise
        what refused it instead (SessionBusy for `on_busy=reject`), so that an HTTP answer can
        carry the refusal's status before any event is sent."""
        if self.admitted is not None:
            await asyncio.shield(self.admitted)

    def cancel(self) -> None:
        """The client left and asked for `on_disconnect=cancel`: stop the turn if it runs here
        (it ends as failed/interrupted, its user message kept)."""
        if self.interrupt is not None:
            self.interrupt()  # it runs on a worker: ask there
            return
        task = self.task
        if task is None or task.done():
            return
        if not self.engine.cancel_turn(self.session_id, self.turn_id, _CLIENT_GONE):
            task.cancel()  # still waiting for the lease: it never starts


class TurnService:
    """The turn layer's face to the web layer, one per process.

    With a `queue` (an `api` process), turns are not run here: each is put on the work queue
    and a worker runs it, publishing its events on the shared broker; a plain turn's answer
    and a streamed turn's events are read back from there, so a client sees no difference."""

    def __init__(
        self,
        engine: TurnEngine,
        broker: StreamBroker,
        gate: TurnGate,
        chunk_flusher: ChunkFlusher,
        queue: WorkQueue | None = None,
        *,
        max_background: int = 0,
    ) -> None:
        self.engine = engine
        self.broker = broker
        self.gate = gate
        self.queue = queue
        # One timer per coalescing window for all of this process's streams.
        self.chunk_flusher = chunk_flusher
        # A reader waits for the next event at most as long as a turn may run.
        self.stream_wait = engine.turn_timeout + engine.lease_ttl
        # How often a plain turn's waiter looks at its record (`_await_end`): one sweep
        # keeps the looks of every waiter.
        self.recheck_s = max(1.0, engine.lease_ttl)
        self._rechecks: DeadlineSweep[_EndWait] = DeadlineSweep(self.recheck_s / 4, self._recheck)
        self._background: set[asyncio.Task[None]] = set()
        self._submitted: set[tuple[str, str]] = set()
        # Background turns of each tenant running here (`--role all`): bounded as the
        # queue bounds a tenant's queued turns, so no tenant piles up tasks without end.
        self.max_background = max_background
        self._background_of: dict[str, int] = {}

    @property
    def store(self) -> SessionStore:
        return self.engine.store

    @property
    def metrics(self) -> Metrics:
        return self.engine.metrics

    @property
    def draining(self) -> bool:
        return self.engine.draining

    # -- admission --------------------------------------------------------------------------

    async def enter(self, principal: Principal, session_id: str, turn_id: str | None) -> str | None:
        """Take an in-flight slot of the principal's tenant for the turn (429 past its
        limits). A limited tenant's turn needs an id to hold the slot by: one is made if the
        client gave none. Returns the turn id to use."""
        if principal.limits.unlimited:
            return turn_id
        turn_id = turn_id or new_turn_id()
        await self.gate.enter(principal, session_id, turn_id)
        return turn_id

    def leave(self, principal: Principal, session_id: str, turn_id: str | None) -> None:
        """Free the slot `enter` took (nothing for an unlimited tenant)."""
        if not principal.limits.unlimited:
            self.gate.leave(principal, session_id, turn_id or "")

    def leave_when_done(self, principal: Principal, streamed: StreamedTurn) -> None:
        """Free the streamed turn's in-flight slot when its task ends (now, for a replay)."""
        if principal.limits.max_inflight <= 0:
            return
        task = streamed.task
        if task is None or task.done():
            self.gate.leave(principal, streamed.session_id, streamed.turn_id)
        else:
            task.add_done_callback(
                lambda _: self.gate.leave(principal, streamed.session_id, streamed.turn_id)
            )

    # -- plain turns ------------------------------------------------------------------------

    async def run(
        self,
        session_id: str,
        message: str,
        *,
        turn_id: str | None,
        metadata: dict[str, Any] | None = None,
        on_busy: OnBusy = "enqueue",
    ) -> TurnRecord:
        """Run a turn to its commit and return its record (see `TurnEngine.run_turn`)."""
        if self.queue is not None:
            return await self._run_queued(session_id, message, turn_id, metadata, on_busy)
        return await self.engine.run_turn(
            session_id, message, turn_id=turn_id, metadata=metadata, on_busy=on_busy
        )

    async def _run_queued(
        self,
        session_id: str,
        message: str,
        turn_id: str | None,
        metadata: dict[str, Any] | None,
        on_busy: OnBusy,
    ) -> TurnRecord:
        """Queue the turn and wait for its end (an `api` process): the worker sends its final
        event to this process's inbox, one message per turn. A turn queued already (the same
        turn id sent again meanwhile) is followed on its stream instead."""
        tid = turn_id or new_turn_id()
        ending = self.broker.expect_end(session_id, tid)
        try:
            after, record = await self._dispatch(
                session_id, tid, message, metadata, on_busy, fresh=turn_id is None, streamed=False
            )
            if record is not None:
                return record
            if after[2]:
                return await self._await_end(session_id, tid, message, ending)
        finally:
            ending.cancel()
        async for event in self.broker.read(session_id, tid, after[1], self.stream_wait):
            if event.final:
                return _ended(session_id, tid, message, event)
        raise error_for("unavailable", f"turn {tid} is queued; read it later with its id")

    async def _await_end(
        self, session_id: str, turn_id: str, message: str, ending: asyncio.Future[StreamEvent]
    ) -> TurnRecord:
        """The queued turn's end, from its worker's message to this process; the turn's
        record is looked at every `recheck_s` meanwhile, so an ending lost on its way (a
        Redis restart) costs that much delay, not the answer."""
        deadline = time.monotonic() + self.stream_wait
        # The wait is the ending's future itself, ended by the sweep when the record is due
        # a look: no waiter future, callbacks or sets per turn, as `asyncio.wait` makes, and
        # no timer per turn (measured, each a share of the api's CPU per turn).
        waiting = _EndWait(session_id, turn_id, ending)
        try:
            while True:
                self._rechecks.arm(waiting, self.recheck_s)
                try:
                    return _ended(session_id, turn_id, message, await waiting.future)
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise  # the request's own cancellation, not the sweep
                finally:
                    self._rechecks.disarm(waiting)
                record = await self.store.get_turn(session_id, turn_id)
                if record is not None and record.status == "completed":
                    return record
                if record is not None and record.status == "failed" and record.error is not None:
                    raise error_for(record.error.code, record.error.message)
                if time.monotonic() >= deadline:
                    raise error_for(
                        "unavailable", f"turn {turn_id} is queued; read it later with its id"
                    )
        finally:
            waiting.future.cancel()  # one asked for here (the caller cancels the first)

    def _recheck(self, waiting: _EndWait, reason: str) -> None:
        """A waiting turn's record is due a look: its wait ends (the waiter looks, then
        waits again). The next wait is registered before this one ends: no ending falls
        between."""
        old = waiting.future
        waiting.future = self.broker.expect_end(waiting.session_id, waiting.turn_id)
        old.cancel()

    async def _dispatch(
        self,
        session_id: str,
        turn_id: str | None,
        message: str,
        metadata: dict[str, Any] | None,
        on_busy: OnBusy,
        callback_url: str | None = None,
        *,
        fresh: bool = False,
        streamed: bool = True,
    ) -> tuple[tuple[str, int, bool], TurnRecord | None]:
        """Put the turn on the queue unless it completed already (then its record). Returns
        its id, where its events of this attempt start (after an earlier attempt's final
        event) and whether this call queued it (False: it was queued already). A turn id
        made here, or `fresh` (the caller made it), names nothing stored yet: no store or
        broker look-up. A plain turn (`streamed` False) has its end sent to this
        process's inbox, where `broker.expect_end` waits for it; with an id made here too,
        nothing else can follow it, and it gets no stream (`QueuedTurn.private`)."""
        assert self.queue is not None
        self.engine.check_admission()
        after = 0
        resume = False
        made_here = fresh or turn_id is None
        if turn_id is None:
            turn_id = new_turn_id()
        elif not fresh:
            record = await self.store.get_turn(session_id, turn_id)
            if record is not None:
                if record.fingerprint not in ("", request_fingerprint(message, metadata)):
                    raise key_reused(turn_id)
                if record.status == "completed":
                    return (turn_id, 0, False), record
            last = await self.broker.last(session_id, turn_id)
            resume = last is not None
            after = last.seq if last is not None and last.final else 0
        if on_busy == "reject":
            # Refused here, as the engine refuses it with --role all: a session whose lease
            # another turn holds (the queue's own check covers turns queued or running).
            running = await self.store.running_turn(session_id)
            if running is not None and running != turn_id:
                raise SessionBusy(f"this session is running turn {running}")
        reply_to = None if streamed else self.broker.inbox
        queued = await self.queue.enqueue(
            QueuedTurn(
                session_id, turn_id, message, metadata, on_busy, callback_url, resume,
                streamed=streamed, reply_to=reply_to, private=made_here and not streamed,
            )
        )  # fmt: skip
        return (turn_id, after, queued), None

    def cancel(self, session_id: str, turn_id: str, reason: str) -> bool:
        """Stop a turn running on this process, or (an `api` process) ask the worker that
        runs it to; False if none runs here and there is no queue."""
        if self.engine.cancel_turn(session_id, turn_id, reason):
            return True
        if self.queue is None:
            return False
        self.interrupt_remote(session_id, turn_id)
        return True

    def interrupt_remote(self, session_id: str, turn_id: str) -> None:
        """Stop the turn wherever it is: withdrawn from the queue if no worker took it yet
        (its stream ended here), else the fleet-wide interrupt asks whichever process holds
        it (a worker stops a turn it has not started as well as a running one)."""

        async def send() -> None:
            try:
                if self.queue is not None and await self.queue.cancel(session_id, turn_id):
                    await self._end_withdrawn(session_id, turn_id, _WITHDRAWN)
                    return
                await self.store.request_interrupt(session_id, turn_id)
            except AgentHostError as exc:
                log.warning("could not interrupt turn %s: %s", turn_id, exc)

        self._keep(asyncio.ensure_future(send()))

    async def _end_withdrawn(self, session_id: str, turn_id: str, why: str) -> None:
        """End the stream of a turn taken off the queue before any worker had it: an
        `interrupted` error after whatever an earlier attempt published, as a cancelled turn
        ends with --role all. Its readers have it; a reader who comes later finds no turn
        (404), as nothing of it was recorded."""
        stream = TurnStream(
            self.broker, session_id, turn_id, self.chunk_flusher, claim=False, resume=True
        )
        error = TurnInterrupted(why)
        await stream.end_unrun("error", _encode(ErrorDetail(error.code, error.message)))

    # -- streamed turns ---------------------------------------------------------------------

    async def stream(
        self,
        principal: Principal,
        session_id: str,
        turn_id: str | None,
        message: str,
        *,
        metadata: dict[str, Any] | None = None,
        on_busy: OnBusy = "enqueue",
        after: int = 0,
        skip_void: bool = False,
    ) -> StreamedTurn:
        """`start_streamed` within the tenant's limits: take an in-flight slot (429 past
        them), start or rejoin the turn, and hold the slot until the turn's task ends (freed
        at once if the start is refused, or for a replay)."""
        turn_id = await self.enter(principal, session_id, turn_id)
        try:
            streamed = await self.start_streamed(
                session_id,
                turn_id,
                message,
                metadata=metadata,
                on_busy=on_busy,
                after=after,
                skip_void=skip_void,
            )
        except BaseException:
            self.leave(principal, session_id, turn_id)
            raise
        self.leave_when_done(principal, streamed)
        return streamed

    async def follow(
        self, principal: Principal, session_id: str, turn_id: str, after: int = 0
    ) -> StreamedTurn:
        """A turn's events after `after`, asked for by its id alone (an adapter's resume):
        a finished turn's from the broker (or its record); a running turn's wherever it
        runs; and a turn whose process died is run again from its recorded message, after a
        `reset` event, as when a native request is sent again. A turn recorded with metadata
        (which the record does not keep) is followed, never run again, from here. Raises
        TurnNotFound, and StreamEnded as `events` does."""
        record = await self.store.get_turn(session_id, turn_id)
        if record is None:
            raise TurnNotFound(f"no turn {turn_id} in session {public_session_id(session_id)}")
        rerunnable = record.fingerprint in ("", request_fingerprint(record.message, None))
        if record.status in ("completed", "failed") or not rerunnable:
            events = await self.events(session_id, turn_id, after)
            return StreamedTurn(self.engine, session_id, turn_id, events, None)
        return await self.stream(
            principal, session_id, turn_id, record.message, after=after, skip_void=True
        )

    async def start_streamed(
        self,
        session_id: str,
        turn_id: str | None,
        message: str,
        *,
        metadata: dict[str, Any] | None,
        on_busy: OnBusy,
        after: int = 0,
        skip_void: bool = False,
    ) -> StreamedTurn:
        """Admit, start (or rejoin) the turn and return its events after `after`.

        `skip_void`: a reader from the start (`after` 0) of a turn whose process died (its
        lease lapsed) starts at the new attempt's `reset`, past the dead attempt's events,
        which are void: for client protocols that cannot take text back (the adapters)."""
        engine = self.engine
        broker = self.broker
        if self.queue is not None:
            return await self._stream_queued(session_id, turn_id, message, metadata, on_busy, after)
        engine.check_admission()
        if turn_id is None:
            turn_id = new_turn_id()
            resume = False
            claim = True
        else:
            record = await self.store.get_turn(session_id, turn_id)
            if record is not None and record.fingerprint not in (
                "",
                request_fingerprint(message, metadata),
            ):
                raise key_reused(turn_id)  # before any replay of the other request's answer
            if record is not None and record.status == "completed":
                events = await self.events(session_id, turn_id, after)
                return StreamedTurn(engine, session_id, turn_id, events, None)
            resume = True
            if record is None:
                broker.drop_stale(session_id, turn_id)  # a deleted session's, if any
            elif skip_void and after == 0 and record.status == "pending":
                last = await broker.last(session_id, turn_id)
                if last is not None and not last.final:
                    after = last.seq
            # Where another process already streams it, read its stream, not a local one.
            claim = record is None or not await broker.exists(session_id, turn_id)
        bind_turn(session_id, turn_id)  # this request's log lines name the turn
        stream = TurnStream(
            broker,
            session_id,
            turn_id,
            self.chunk_flusher,
            claim=claim,
            resume=resume,
            after=after,
        )
        tid = turn_id
        admitted: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_start() -> None:
            if not admitted.done():
                admitted.set_result(None)
            stream.started()

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
                    on_event=stream.event,
                    on_start=on_start,
                    attach=resume,
                )
                kind, data = "done", _encode(turn_out(record))
            except AgentHostError as exc:
                kind, data = "error", _encode(ErrorDetail(exc.code, exc.message))
                if not admitted.done():
                    admitted.set_exception(exc)
                    admitted.exception()  # retrieved: nobody need wait for it
            finally:
                if not admitted.done():
                    admitted.set_result(None)
            try:
                await stream.finish(kind, data)
                if kind == "error" and await self.store.get_turn(session_id, tid) is None:
                    # Its session was deleted while it ran: its readers have the error,
                    # and nothing of it stays behind.
                    await broker.forget(session_id, tid)
            except AgentHostError as exc:
                # Local readers have it; a reader elsewhere falls back to the turn record.
                log.warning("could not publish the end of turn %s: %s", tid, exc)

        task = asyncio.ensure_future(run())
        self._keep(task)
        events = broker.read(session_id, turn_id, after, self.stream_wait)
        return StreamedTurn(engine, session_id, turn_id, events, task, admitted)

    async def _stream_queued(
        self,
        session_id: str,
        turn_id: str | None,
        message: str,
        metadata: dict[str, Any] | None,
        on_busy: OnBusy,
        after: int,
    ) -> StreamedTurn:
        """A streamed turn in an `api` process: queued, its events read from the broker."""
        try:
            start, record = await self._dispatch(session_id, turn_id, message, metadata, on_busy)
        except SessionBusy as busy:
            # As with --role all: the refusal is the admission's (an SSE answer is a 409)
            # and the stream's one event (a WebSocket's error frame).
            return _refused(self.engine, session_id, turn_id or new_turn_id(), after, busy)
        tid = start[0]
        bind_turn(session_id, tid)
        if record is not None:
            events = await self.events(session_id, tid, after)
        else:
            events = self.broker.read(session_id, tid, max(after, start[1]), self.stream_wait)
        return StreamedTurn(
            self.engine,
            session_id,
            tid,
            events,
            None,
            interrupt=lambda: self.interrupt_remote(session_id, tid),
        )

    async def submit(
        self,
        session_id: str,
        turn_id: str | None,
        message: str,
        *,
        metadata: dict[str, Any] | None,
        on_busy: OnBusy,
        on_end: TurnEnd | None = None,
        callback_url: str | None = None,
    ) -> str:
        """Start a background turn and return its id at once: queued for a worker (an `api`
        process), else run here in its own task. Its status and answer are read with
        `GET .../turns/{turn_id}`, its events with the stream endpoint; `on_end` (here) or
        the worker (queued, with `callback_url`) reports its end."""
        if self.queue is not None:
            start, _ = await self._dispatch(
                session_id, turn_id, message, metadata, on_busy, callback_url
            )
            return start[0]  # a busy session's reject was raised above: a 409
        tid = turn_id or new_turn_id()
        tenant = tenant_of(session_id)
        running = self._background_of.get(tenant, 0)
        if self.max_background and running >= self.max_background:
            raise QueueFull(
                f"tenant has {running} background turns running; retry when some have ended"
            )
        streamed = await self.start_streamed(
            session_id, tid, message, metadata=metadata, on_busy=on_busy
        )
        if on_busy == "reject":
            # A busy session's reject is the request's answer (409), as an api process
            # answers it, not a 202 for a turn that never runs.
            await streamed.admission()
        self._submitted.add((session_id, tid))
        self._background_of[tenant] = self._background_of.get(tenant, 0) + 1
        task = streamed.task

        async def ended() -> None:
            record: TurnRecord | None = None
            error: AgentHostError | None = None
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(task)
            self._submitted.discard((session_id, tid))
            left = self._background_of.pop(tenant, 1) - 1
            if left:
                self._background_of[tenant] = left
            found = await self.store.get_turn(session_id, tid)
            if found is not None and found.status == "completed":
                record = found
            elif found is not None and found.error is not None:
                error = error_for(found.error.code, found.error.message)
            else:
                error = error_for("unavailable", "the turn did not end")
            if on_end is not None:
                await on_end(session_id, tid, record, error)

        self._keep(asyncio.ensure_future(ended()))
        return tid

    async def is_waiting(self, session_id: str, turn_id: str) -> bool:
        """Whether a turn with no record yet is queued or about to start here (pending)."""
        if (session_id, turn_id) in self._submitted:
            return True
        return self.queue is not None and await self.queue.is_queued(session_id, turn_id)

    async def delete_session(self, session_id: str) -> bool:
        """Delete the session with everything of it: its turns on the work queue (each
        queued turn's stream ends with an `interrupted` error; none runs), messages, turns
        (the idempotency records) and lease in the store, then every stream of it in the
        broker. False if neither the store nor the queue knew it (its streams, if any, go
        anyway). A turn running meanwhile loses its lease: its commit is refused, and its
        stream ends with an error and goes."""
        removed: list[str] = []
        if self.queue is not None:
            # Off the queue first, so no worker starts one of its turns meanwhile (one that
            # holds a turn finds it withdrawn and ends it without running it).
            removed = await self.queue.drop_session(session_id)
        deleted = await self.store.delete_session(session_id)
        self.engine.window_cache.drop(session_id)
        for turn_id in removed:
            await self._end_withdrawn(session_id, turn_id, _SESSION_DELETED)
        await self.broker.forget(session_id)
        return deleted or bool(removed)

    async def events(self, session_id: str, turn_id: str, after: int) -> AsyncIterator[StreamEvent]:
        """A turn's events after `after`: from the broker while it has them, else (a
        finished turn whose stream expired) its final event from the turn record.

        Never waits on a stream that has ended: `after` equal to its final event raises
        StreamEnded, beyond it EventBeyondEnd (422)."""
        record = await self.store.get_turn(session_id, turn_id)
        if record is None:
            if await self.is_waiting(session_id, turn_id):  # queued: its events are to come
                return self.broker.read(session_id, turn_id, after, self.stream_wait)
            # A worker records a turn before it leaves the queue: one that left between the
            # two reads above is in the store now.
            record = await self.store.get_turn(session_id, turn_id)
        if record is None:
            raise TurnNotFound(f"no turn {turn_id} in session {public_session_id(session_id)}")
        if after > 0 or record.status in ("completed", "failed"):
            last = await self.broker.last(session_id, turn_id)
            if last is None:
                if record.status in ("completed", "failed"):
                    return _final_event(record, after)  # its stream expired
            elif last.final:
                if after == last.seq:
                    raise StreamEnded(last)
                if after > last.seq:
                    raise EventBeyondEnd(
                        f"Last-Event-ID {after} is beyond the end of turn {turn_id}'s stream "
                        f"(its last event is {last.seq})"
                    )
        return self.broker.read(session_id, turn_id, after, self.stream_wait)

    def _keep(self, task: asyncio.Task[None]) -> None:
        """Hold a reference to a background task until it ends."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class _EndWait:
    """A plain turn's api-side wait for its end (`TurnService._await_end`): the future of
    its ending, replaced each time the turn's record is due a look."""

    __slots__ = ("future", "session_id", "turn_id")

    def __init__(self, session_id: str, turn_id: str, future: asyncio.Future[StreamEvent]) -> None:
        self.session_id = session_id
        self.turn_id = turn_id
        self.future = future


def _ended(session_id: str, turn_id: str, message: str, event: StreamEvent) -> TurnRecord:
    """A queued plain turn's record from its final event as the worker published it (no
    store read), or its error raised."""
    if event.kind == "error":
        detail = msgspec.json.decode(event.data, type=ErrorDetail)
        raise error_for(detail.code, detail.message)
    out = msgspec.json.decode(event.data, type=TurnOut)
    now = time.time()
    return TurnRecord(turn_id, session_id, "completed", message, now, now, response=out.response)


def _refused(
    engine: TurnEngine, session_id: str, turn_id: str, after: int, error: AgentHostError
) -> StreamedTurn:
    """A streamed turn refused before it was queued: its admission raises `error`, and its
    events are that error alone, numbered as its stream's first event."""
    admitted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    admitted.set_exception(error)
    admitted.exception()  # retrieved: a WebSocket reads the event instead

    async def events() -> AsyncIterator[StreamEvent]:
        yield StreamEvent(after + 1, "error", _encode(ErrorDetail(error.code, error.message)))

    return StreamedTurn(engine, session_id, turn_id, events(), None, admitted)


async def _final_event(record: TurnRecord, after: int) -> AsyncIterator[StreamEvent]:
    if record.status == "completed":
        yield StreamEvent(after + 1, "done", _encode(turn_out(record)))
    else:
        yield StreamEvent(after + 1, "error", _encode(error_event_data(record)))
