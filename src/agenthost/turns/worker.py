"""A queue worker: takes turns from the work queue and runs each on the turn engine,
publishing its events on the stream broker, as a streamed turn of `--role all` would.

Up to `concurrency` turns run at once; the worker takes only as many as it has free slots.
A session's turns run in the order they were queued: a turn whose session has an earlier
turn still on the queue waits for it.
A plain turn's chunks are not published (its client reads the answer only); its end goes to
the api process that waits for it (`QueuedTurn.reply_to`, `StreamBroker.notify_end`), and,
when the client chose its id (a retry may follow it there), to its stream; one whose id the
api process made has no stream at all (`QueuedTurn.private`).
A turn delivered again (its first worker was killed or paused past `claim_after`, or a
draining one handed it back) waits for the old lease to lapse, then its stream goes on with
a `reset` event numbered after the newest event, so a reader anywhere sees the text of the
new attempt only. A turn is acknowledged after its fenced commit (or its recorded
failure). A worker whose commit was refused by the fence (`lease_lost`: another worker took
the turn) neither acknowledges it nor ends its stream: the new owner does both.

A withdrawn turn (cancelled while queued, or its session deleted: `WorkQueue.cancel`,
`drop_session`) is ended here without running: its stream gets an `interrupted` error, as
a cancelled turn's does with `--role all`, and it is acknowledged. A worker finds it so while
it waits for the session's earlier turns (the queue's marker is gone) or, between that and
the agent's start, by the fleet-wide interrupt the cancel sends (then the engine interrupts it
as it starts); a running turn is interrupted by the engine itself.

Draining (SIGTERM): no turn is taken any more; running turns have `--drain-timeout` to finish
and commit; those still running are cancelled and handed back to the queue, where another
worker takes them at once and runs them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import msgspec

from agenthost.brokers.base import EventKind, StreamBroker, StreamEvent
from agenthost.connections.redis_commands import Command
from agenthost.core.errors import (
    AgentHostError,
    LeaseLost,
    SessionBusy,
    TurnInterrupted,
    Unavailable,
)
from agenthost.observability.logs import bind_turn
from agenthost.queue.base import Delivery, QueuedTurn, Withdrawn, WorkQueue
from agenthost.stores.base import TurnRecord
from agenthost.turns.chunks import ChunkFlusher, TurnStream
from agenthost.turns.engine import TurnEngine
from agenthost.turns.payloads import ErrorDetail, answer_out, turn_out

__all__ = ["TurnEnded", "TurnWorker"]

log = logging.getLogger("agenthost.worker")

_encode = msgspec.json.encode

_HANDED_BACK = "handed back to the queue by a draining worker"
_WITHDRAWN = "the turn was cancelled before it ran"
_RECENT_INTERRUPTS = 1024  # interrupts of turns not (yet) held here, kept this many...
_RECENT_INTERRUPT_S = 10.0  # ...for this long: a take's reply may come after its cancel

TurnEnded = Callable[[Delivery, TurnRecord | None, AgentHostError | None], Awaitable[None]]
"""Told when a queued turn ended here (committed: the record; failed: the error), before it
is acknowledged: background turns' callbacks hang on it."""


class _FoldedEnd:
    """A plain turn's end folded into its commit (`TurnEngine.run_turn`'s `then`): its
    acknowledgement and, where the broker sends it through the same server, its ending run
    in the commit's own script, one round trip for the three (measured: a write and a read
    per batch of turns, for the worker and for Redis). `asked`: the commit was about to run
    with them, so they ran if the engine returned its record; `ended`: the ending was one
    of them."""

    __slots__ = ("acking", "asked", "broker", "ended", "inbox", "turn", "wire")

    def __init__(
        self,
        broker: StreamBroker,
        turn: QueuedTurn,
        inbox: str,
        wire: object,
        acking: list[Command],
    ) -> None:
        self.broker = broker
        self.turn = turn
        self.inbox = inbox
        self.wire = wire
        self.acking = acking
        self.asked = False
        self.ended = False

    def commands(self, answer: str) -> list[Command]:
        turn = self.turn
        data = _encode(answer_out(turn.session_id, turn.turn_id, answer))
        event = StreamEvent(1, "done", data)
        ending = self.broker.ending_commands(self.inbox, turn.session_id, turn.turn_id, event)
        self.asked = True
        if ending is None or ending[0] is not self.wire:
            return self.acking  # this process's own inbox: told here once committed
        self.ended = True
        return [*ending[1], *self.acking]


def consumer_name() -> str:
    """This worker's name in the queue: host and process id."""
    return f"{socket.gethostname()}-{os.getpid()}"


class TurnWorker:
    """Runs queued turns on `engine` until stopped."""

    def __init__(
        self,
        engine: TurnEngine,
        broker: StreamBroker,
        queue: WorkQueue,
        chunk_flusher: ChunkFlusher,
        *,
        concurrency: int = 16,
        consumer: str | None = None,
        on_end: TurnEnded | None = None,
    ) -> None:
        self.engine = engine
        self.broker = broker
        self.queue = queue
        self.chunk_flusher = chunk_flusher
        self.concurrency = concurrency
        self.consumer = consumer or consumer_name()
        self.on_end = on_end
        self._running: dict[str, tuple[Delivery, asyncio.Task[None]]] = {}
        # Turns held here that the engine does not run yet, by (session, turn): receipt.
        self._held: dict[tuple[str, str], str] = {}
        self._cancelled: set[str] = set()  # receipts of held turns asked to stop
        self._recent: OrderedDict[tuple[str, str], float] = OrderedDict()
        engine.store.on_interrupt(self._on_interrupt)
        self._free = asyncio.Event()
        self._free.set()
        self._loop: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def busy(self) -> int:
        """Turns running on this worker now."""
        return len(self._running)

    def start(self) -> None:
        """Start taking turns (call from inside the event loop)."""
        if self._loop is None:
            self._loop = asyncio.create_task(self._take_forever(), name="queue-worker")
            self._heartbeat = asyncio.create_task(self._touch_forever(), name="queue-heartbeat")

    def stop_taking(self) -> None:
        """Drain: take no more turns (those running go on)."""
        self._stopping = True
        if self._loop is not None:
            self._loop.cancel()

    def hand_back(self, reason: str) -> int:
        """Cancel every turn running here (the drain timed out): each is handed back to the
        queue and run again by another worker. Returns how many."""
        log.warning("handing back %d running turns: %s", len(self._running), reason)
        tasks = [task for _, task in self._running.values() if not task.done()]
        for task in tasks:
            task.cancel()
        return len(tasks)

    async def stop(self) -> None:
        """Stop taking, hand back whatever still runs (cancelled), stop the heartbeat."""
        self.stop_taking()
        for task in (self._loop,):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for _, task in list(self._running.values()):
            task.cancel()
        for _, task in list(self._running.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        self._loop = self._heartbeat = None

    async def _take_forever(self) -> None:
        while not self._stopping:
            free = self.concurrency - len(self._running)
            if free <= 0:
                self._free.clear()
                await self._free.wait()
                continue
            try:
                deliveries = await self.queue.take(self.consumer, free, wait=2.0)
            except AgentHostError as exc:
                log.warning("could not take turns from the queue: %s", exc)
                await asyncio.sleep(1.0)  # the store is down: ask again shortly
                continue
            for delivery in deliveries:
                receipt = delivery.receipt
                key = (delivery.turn.session_id, delivery.turn.turn_id)
                self._held[key] = receipt
                asked = self._recent.pop(key, None)
                if asked is not None and time.monotonic() - asked < _RECENT_INTERRUPT_S:
                    self._cancelled.add(receipt)  # its cancel came before the take's reply
                task = asyncio.create_task(self._run(delivery))
                self._running[receipt] = (delivery, task)
                task.add_done_callback(lambda _, r=receipt: self._done(r))  # type: ignore[misc]

    def _done(self, receipt: str) -> None:
        found = self._running.pop(receipt, None)
        if found is not None:
            turn = found[0].turn
            if self._held.get((turn.session_id, turn.turn_id)) == receipt:
                del self._held[(turn.session_id, turn.turn_id)]
        self._cancelled.discard(receipt)
        self._free.set()

    def _on_interrupt(self, session_id: str, turn_id: str) -> None:
        """A fleet-wide interrupt: a turn held here that has not started is stopped before
        it does (a started one is the engine's). One not held here is remembered a while."""
        key = (session_id, turn_id)
        receipt = self._held.get(key)
        if receipt is not None:
            self._cancelled.add(receipt)
            return
        if self.engine.runs(session_id, turn_id):
            return  # the engine's: it was interrupted there (a retry of it must not be)
        self._recent[key] = time.monotonic()
        self._recent.move_to_end(key)
        while len(self._recent) > _RECENT_INTERRUPTS:
            self._recent.popitem(last=False)

    def _started(self, delivery: Delivery, stream: TurnStream | None) -> Callable[[], None]:
        """The engine's `on_start` for a queued turn: from here the engine runs it (and
        interrupts it); one asked to stop meanwhile is interrupted as it starts."""
        turn = delivery.turn
        key = (turn.session_id, turn.turn_id)

        def on_start() -> None:
            if stream is not None:
                stream.started()
            if self._held.get(key) == delivery.receipt:
                del self._held[key]
            if delivery.receipt in self._cancelled:
                # The engine registers the turn as it enters its run, right after this.
                asyncio.get_running_loop().call_soon(
                    self.engine.cancel_turn, turn.session_id, turn.turn_id, _WITHDRAWN
                )

        return on_start

    async def _touch_forever(self) -> None:
        period = self.queue.claim_after / 3
        while True:
            await asyncio.sleep(period)
            running = [delivery for delivery, _ in self._running.values()]
            if running:
                try:
                    await self.queue.touch(self.consumer, running)
                except AgentHostError as exc:
                    log.warning("could not touch running turns: %s", exc)

    async def _after_earlier_turns(self, delivery: Delivery) -> None:
        """Wait while a turn of the same session queued before this one is still queued or
        running (another worker took it), so a session's turns run in the order they came;
        at most as long as a turn may run (then that turn's worker is gone anyway)."""
        engine = self.engine
        deadline = asyncio.get_running_loop().time() + engine.turn_timeout + engine.lease_ttl
        while True:
            if delivery.receipt in self._cancelled:
                raise Withdrawn(delivery.turn.turn_id)
            if not await self.queue.earlier(delivery):  # raises Withdrawn too
                return
            if delivery.turn.on_busy == "reject":
                # Queued at the same moment as another turn of its session (the enqueue's
                # check saw neither): a reject never waits.
                raise SessionBusy("this session is running an earlier turn")
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            # The earlier turn's commit releases the session's lease: that wakes us.
            await engine.store.wait_for_release(delivery.turn.session_id, min(remaining, 0.1))

    async def _run(self, delivery: Delivery) -> None:
        turn = delivery.turn
        session_id, turn_id = turn.session_id, turn.turn_id
        bind_turn(session_id, turn_id)
        stream: TurnStream | None = None
        if not turn.private:
            if delivery.attempt == 1:
                self.broker.drop_stale(session_id, turn_id)
            # A first delivery of a turn with no stream numbers from 1; any other continues
            # the stream after its newest event (a `reset` first, if an attempt ran).
            resume = turn.resume or delivery.attempt > 1
            stream = TurnStream(
                self.broker, session_id, turn_id, self.chunk_flusher, claim=True, resume=resume
            )
        folded = self._folded(delivery, stream)
        kind: EventKind
        record: TurnRecord | None = None
        error: AgentHostError | None = None
        withdrawn = False
        try:
            await self._after_earlier_turns(delivery)
            record = await self.engine.run_turn(
                session_id,
                turn.message,
                turn_id=turn_id,
                metadata=turn.metadata,
                on_busy=turn.on_busy,
                # A plain turn's client reads its answer only (`streamed` False).
                on_chunk=stream.sink if stream is not None and turn.streamed else None,
                on_start=self._started(delivery, stream),
                attach=True,
                then=None if folded is None else folded.commands,
                keyed=not turn.private,
            )
            kind, data = "done", _encode(turn_out(record))
        except Withdrawn:
            withdrawn = True
            error = TurnInterrupted(_WITHDRAWN)
            kind, data = "error", _encode(ErrorDetail(error.code, error.message))
        except LeaseLost as exc:
            if await self._taken_over(delivery):
                # Another worker holds the turn now (this one was paused or cut off): it
                # ends the stream and acknowledges the turn.
                log.warning("turn %s was taken over by another worker; not committed here",
                            turn_id)  # fmt: skip
                return
            # Its session was deleted while it ran (no record of it left): nobody else will
            # end it.
            error = exc
            kind, data = "error", _encode(ErrorDetail(exc.code, exc.message))
        except asyncio.CancelledError:
            # Stopped here (drain timeout, shutdown): another worker runs it again.
            with contextlib.suppress(AgentHostError):
                await self.queue.release(self.consumer, delivery)
            raise
        except AgentHostError as exc:
            if isinstance(exc, Unavailable):
                # Draining, at --max-inflight-turns, or the store out of reach: nothing of
                # the turn was decided. It goes back to the queue for a worker that can run
                # it (its readers wait; a retry numbers on after a `reset`).
                log.warning("turn %s handed back: %s", turn_id, exc.message)
                with contextlib.suppress(AgentHostError):
                    await self.queue.release(self.consumer, delivery)
                return
            error = exc
            kind, data = "error", _encode(ErrorDetail(exc.code, exc.message))
        if stream is not None:  # none: its end goes to its api process alone
            await self._end_stream(stream, kind, data, withdrawn=withdrawn)
        if self.on_end is not None:
            try:
                await self.on_end(delivery, record, error)
            except Exception:
                log.exception("the end of turn %s could not be reported", turn_id)
        if record is not None and folded is not None and folded.asked:
            # Acknowledged, and its api process told (unless that is this one), by the commit.
            if not folded.ended and turn.reply_to is not None:
                self.broker.notify_end(
                    turn.reply_to, session_id, turn_id, StreamEvent(1, kind, data)
                )
            return
        if turn.reply_to is not None:
            # Sent in the same pass as the acknowledgement, not after its reply (a round
            # trip per turn): the api answers, and its client sends the session's next turn,
            # round trips later, by when the acknowledgement is applied; were it not, that
            # turn would only wait for this one (`earlier`), never run before it.
            event = StreamEvent(1 if stream is None else max(stream.seq, 1), kind, data)
            self.broker.notify_end(turn.reply_to, session_id, turn_id, event)
        try:
            await self.queue.ack(delivery)
        except AgentHostError as exc:
            # Delivered again later: the store answers the committed turn without a run.
            log.warning("could not acknowledge turn %s: %s", turn_id, exc)

    def _folded(self, delivery: Delivery, stream: TurnStream | None) -> _FoldedEnd | None:
        """The end of a plain turn with no stream and no callback, folded into its commit
        where the store, the queue and the broker share one Redis server (else None: the
        turn ends step by step)."""
        turn = delivery.turn
        if stream is not None or turn.reply_to is None or turn.callback_url is not None:
            return None
        acking = self.queue.ack_commands(delivery)
        if acking is None or not self.engine.store.runs_after_commit(acking[0]):
            return None
        return _FoldedEnd(self.broker, turn, turn.reply_to, *acking)

    async def _end_stream(
        self, stream: TurnStream, kind: EventKind, data: bytes, *, withdrawn: bool
    ) -> None:
        """Publish the turn's final event on its stream (after the newest event, for an
        attempt that never ran)."""
        try:
            if withdrawn:
                await stream.end_unrun(kind, data)
            else:
                await stream.finish(kind, data)
            session_id, turn_id = stream.session_id, stream.turn_id
            if kind == "error" and await self.engine.store.get_session(session_id) is None:
                # Its session was deleted (or never made: its first turn was withdrawn):
                # its readers have the error, and nothing of it stays behind.
                await self.broker.forget(session_id, turn_id)
        except AgentHostError as exc:
            log.warning("could not publish the end of turn %s: %s", stream.turn_id, exc)

    async def _taken_over(self, delivery: Delivery) -> bool:
        """After a lost lease: whether the turn is still recorded (another worker took it
        over, and ends it), not gone with its deleted session. True if the store cannot
        say (the safe answer: another worker may hold it)."""
        try:
            turn = delivery.turn
            return await self.engine.store.get_turn(turn.session_id, turn.turn_id) is not None
        except AgentHostError:
            return True
