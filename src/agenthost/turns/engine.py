"""The turn engine: the one place that knows the order of a turn.

admit → lease the session (busy policy) → record the user message as pending → run the agent
→ commit (fenced, idempotent) → release. HTTP handlers, the WebSocket loop and queue workers
are thin adapters over `TurnEngine.run_turn`. No web framework in here.

Guarantees, given a conforming store: one running turn per session fleet-wide; a turn id
commits at most once; a retry of a completed turn returns the stored answer without calling
the agent; a process that lost its lease never commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from agenthost.connections.redis_commands import Command
from agenthost.core.errors import (
    AgentError,
    AgentHostError,
    Draining,
    LeaseLost,
    Overloaded,
    SessionBusy,
    TurnInterrupted,
)
from agenthost.core.ids import new_turn_id
from agenthost.llm.base import LLMClient
from agenthost.observability.logs import bind_turn, current_tenant, turn_log
from agenthost.observability.metrics import Metrics
from agenthost.stores.base import (
    Busy,
    Completed,
    Lease,
    Message,
    SessionStore,
    Started,
    TurnError,
    TurnRecord,
)
from agenthost.turns.agents import AgentRunner, ChunkSink, Turn
from agenthost.turns.fingerprint import request_fingerprint
from agenthost.turns.turn_events import EventSink
from agenthost.turns.window_cache import WindowCache

if TYPE_CHECKING:
    from agenthost.observability.tracing import Tracing

__all__ = ["OnBusy", "TurnEngine"]

log = logging.getLogger("agenthost.engine")

OnBusy = Literal["reject", "enqueue", "interrupt"]

_TIMEOUT = "timeout"  # cancel reason of a turn that ran past turn_timeout

# Error code -> the `outcome` label of agenthost_turns_total.
_OUTCOMES = {
    "session_busy": "rejected",
    "idempotency_key_reused": "rejected",
    "draining": "refused",
    "overloaded": "refused",
    "interrupted": "interrupted",
    "lease_lost": "unavailable",
    "store_unavailable": "unavailable",
}


class _Running:
    """A turn this process is running: its lease, its task, and why it was cancelled."""

    __slots__ = ("cancel_reason", "lease", "leased_at", "task")

    def __init__(self, lease: Lease, task: asyncio.Task[Any] | None) -> None:
        self.lease = lease
        self.task = task
        self.leased_at = time.monotonic()
        self.cancel_reason: str | None = None


class TurnEngine:
    """Runs turns of any session against a `SessionStore` with the user's agent."""

    def __init__(
        self,
        store: SessionStore,
        agent: AgentRunner,
        llm: LLMClient,
        *,
        session_ttl: float = 3600.0,
        history_window: int = 50,
        lease_ttl: float = 10.0,
        enqueue_timeout: float = 30.0,
        turn_timeout: float = 300.0,
        max_inflight_turns: int = 0,
        detailed_errors: bool = False,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
        window_cache: WindowCache | None = None,
    ) -> None:
        self.store = store
        self.agent = agent
        self.llm = llm
        self.session_ttl = session_ttl
        self.history_window = history_window
        self.lease_ms = max(1, int(lease_ttl * 1000))
        self.lease_ttl = lease_ttl
        self.enqueue_timeout = enqueue_timeout
        self.turn_timeout = turn_timeout
        self.max_inflight_turns = max_inflight_turns
        # Off: a failed agent's exception stays in the log and the trace; the client (and the
        # turn record it can read) get a stable message with the turn id.
        self.detailed_errors = detailed_errors
        self.draining = False
        self.agent_calls = 0
        self.metrics = metrics or Metrics()
        self.metrics.watch_engine(lambda: self._admitted, lambda: self.draining)
        self.tracing = tracing
        # Off unless given one: each turn then reads its whole window from the store.
        self.window_cache = WindowCache(0) if window_cache is None else window_cache
        self._running: dict[tuple[str, str], _Running] = {}
        # Turns whose `begin_turn` is awaiting the store's reply here, with the reason of an
        # interrupt requested meanwhile (None: none yet).
        self._leasing: dict[tuple[str, str], str | None] = {}
        self._admitted = 0
        self._renewer: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        store.on_interrupt(self._on_interrupt)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the lease renewer (call from inside the event loop)."""
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_forever(), name="lease-renewer")

    async def stop(self) -> None:
        """Stop the lease renewer."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None

    @property
    def inflight(self) -> int:
        """Turns admitted and not yet finished in this process (waiting or running)."""
        return self._admitted

    async def wait_idle(self, within: float | None = None) -> bool:
        """Wait until no turn is in flight; False if `within` seconds passed first."""
        try:
            async with asyncio.timeout(within):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    # -- the turn --------------------------------------------------------------------------

    async def run_turn(
        self,
        session_id: str,
        message: str,
        *,
        turn_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        on_busy: OnBusy = "enqueue",
        on_chunk: ChunkSink | None = None,
        on_start: Callable[[], None] | None = None,
        attach: bool = False,
        on_event: EventSink | None = None,
        then: Callable[[str], Sequence[Command]] | None = None,
        keyed: bool | None = None,
    ) -> TurnRecord:
        """Run one turn to its end and return its committed record.

        `on_chunk` gets the answer's text as it comes, `on_event` the agent's tool calls and
        interrupts (`Turn.tool`, `Turn.interrupt`). `on_start` is called once this process
        holds the lease and is about to run the agent (not for a replayed turn). With
        `attach`, a request for the turn id that is running right now waits for its answer
        whatever `on_busy` says (a resumed stream), and runs it again if its process died
        (the lease expires). `then`, given the answer, names Redis commands the commit runs
        in its own step once it succeeded (`SessionStore.commit_turn`; only for a store that
        `runs_after_commit`). `keyed`: whether `turn_id` is the client's idempotency key,
        fingerprinted so that it names one request; by default a given turn id is (a queue
        worker says False for an id its api process made, which no client can send again).

        A `turn_id` recorded before for another message or metadata raises
        IdempotencyKeyReused (422). Raises SessionBusy (409), TurnInterrupted (409),
        AgentError (502), LeaseLost,
        StoreUnavailable, Draining or Overloaded (503).
        """
        started_at = time.monotonic()
        outcome = "completed"
        # A client's turn id is an idempotency key: it names this request and no other.
        if keyed is None:
            keyed = turn_id is not None
        fingerprint = request_fingerprint(message, metadata) if keyed else ""
        turn_id = turn_id or new_turn_id()
        bind_turn(session_id, turn_id)
        span = None
        if self.tracing is not None:
            span = self.tracing.start_turn(session_id, turn_id, current_tenant())
        record: TurnRecord | None = None
        try:
            self.check_admission()
            self._admitted += 1
            self._idle.clear()
            try:
                started = await self._lease(
                    session_id, turn_id, message, on_busy, metadata, attach, fingerprint
                )
                if isinstance(started, TurnRecord):
                    outcome = "replayed"
                    record = started
                    return started
                if on_start is not None:
                    on_start()
                record = await self._run_leased(
                    session_id, message, started, on_chunk, on_event, then
                )
                return record
            finally:
                self._admitted -= 1
                if self._admitted == 0:
                    self._idle.set()
        except AgentHostError as exc:
            outcome = _OUTCOMES.get(exc.code, "failed")
            if span is not None and exc.__cause__ is not None:
                span.fail(exc.__cause__)  # the agent's own exception, for the trace
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            seconds = time.monotonic() - started_at
            self.metrics.turn_finished(outcome, seconds)
            self.metrics.activity.turn_finished(
                outcome,
                seconds,
                tenant=current_tenant(),
                session_id=session_id,
                turn_id=turn_id,
                message=message,
                response=None if record is None else record.response,
            )
            if span is not None:
                span.end_turn(outcome)
            if turn_log.enabled:
                turn_log.finished(
                    outcome, seconds, message, None if record is None else record.response
                )

    def check_admission(self) -> None:
        """Raise Draining or Overloaded (503) if a new turn would be refused now; streaming
        adapters call it before they answer 200, so a balancer can still retry elsewhere."""
        if self.draining:
            raise Draining("this process is draining; retry on another")
        if self.max_inflight_turns and self._admitted >= self.max_inflight_turns:
            raise Overloaded(f"{self._admitted} turns in flight; retry shortly")

    async def _lease(
        self,
        session_id: str,
        turn_id: str,
        message: str,
        on_busy: OnBusy,
        metadata: dict[str, Any] | None,
        attach: bool = False,
        fingerprint: str = "",
    ) -> Started | TurnRecord:
        """Take the session's lease for `turn_id`, following the busy policy.

        Returns Started, or the stored record if this turn id already completed.
        """
        deadline: float | None = None
        interrupted: str | None = None
        key = (session_id, turn_id)
        while True:
            cached = self.window_cache.get(session_id)
            # The store may hand out the lease, and another process see the turn running and
            # ask to interrupt it, before this process reads the reply: `_on_interrupt` notes
            # such a request here, and the turn ends interrupted as soon as it is ours.
            self._leasing[key] = None
            try:
                result = await self.store.begin_turn(
                    session_id,
                    turn_id,
                    message,
                    metadata_patch=metadata,
                    lease_ms=self.lease_ms,
                    window=self.history_window,
                    ttl_s=self.session_ttl,
                    fingerprint=fingerprint,
                    known=None if cached is None else cached.mark,
                )
            finally:
                early_interrupt = self._leasing.pop(key, None)
            if type(result) is Started:
                if early_interrupt is not None:
                    await self._fail_quietly(result.lease, "interrupted", early_interrupt)
                    raise TurnInterrupted(early_interrupt)
                result.history = self.window_cache.window(cached, result, self.history_window)
                result.delta = False
                return result
            if type(result) is Completed:
                return result.record
            assert type(result) is Busy
            same_turn = result.running_turn_id == turn_id
            if same_turn and attach:
                # Its answer is coming (or its lease expires and we run it): wait as long as
                # a turn may run.
                if deadline is None:
                    deadline = time.monotonic() + self.turn_timeout + self.lease_ttl
            elif on_busy == "reject":
                raise SessionBusy(
                    "this turn is already running"
                    if same_turn
                    else f"this session is running turn {result.running_turn_id}"
                )
            if on_busy == "interrupt" and not same_turn and interrupted != result.running_turn_id:
                interrupted = result.running_turn_id
                await self.store.request_interrupt(session_id, result.running_turn_id)
            now = time.monotonic()
            if deadline is None:
                deadline = now + self.enqueue_timeout
            remaining = deadline - now
            if remaining <= 0:
                raise SessionBusy(f"this session stayed busy for {self.enqueue_timeout:g} s")
            # A release wakes us; the lease TTL bounds the wait for an owner that died.
            await self.store.wait_for_release(session_id, min(remaining, self.lease_ttl))

    async def _run_leased(
        self,
        session_id: str,
        message: str,
        started: Started,
        on_chunk: ChunkSink | None,
        on_event: EventSink | None = None,
        then: Callable[[str], Sequence[Command]] | None = None,
    ) -> TurnRecord:
        lease = started.lease
        key = (session_id, lease.turn_id)
        running = _Running(lease, asyncio.current_task())
        self._running[key] = running
        user_at = time.time()
        turn = Turn(
            session_id,
            lease.turn_id,
            message,
            started.history,
            started.metadata,
            self.llm,
            on_chunk is not None,
            on_event,
            started.state,
        )
        # One timer handle instead of an asyncio.timeout context: the same bound, cheaper on
        # the hot path.
        timer = asyncio.get_running_loop().call_later(
            self.turn_timeout, self.cancel_turn, session_id, lease.turn_id, _TIMEOUT
        )
        try:
            try:
                self.agent_calls += 1
                answer = await self.agent(turn, on_chunk)
            except asyncio.CancelledError:
                reason = running.cancel_reason
                task = running.task
                if reason is None or task is None:
                    # Not ours (client gone, shutdown): record why, keep the user message.
                    await self._fail_quietly(lease, "interrupted", "the turn was cancelled")
                    raise
                task.uncancel()
                if reason == "lease_lost":
                    raise LeaseLost("the session lease was lost while the agent ran") from None
                if reason is _TIMEOUT:
                    text = f"the agent ran longer than {self.turn_timeout:g} s"
                    await self._fail_quietly(lease, "timeout", text)
                    raise AgentError(text) from None
                await self._fail_quietly(lease, "interrupted", reason)
                raise TurnInterrupted(reason) from None
            except AgentHostError as exc:
                await self._fail_quietly(lease, exc.code, exc.message)
                raise
            except Exception as exc:
                log.exception("agent failed in session %s turn %s", session_id, lease.turn_id)
                if self.detailed_errors:
                    text = f"the agent failed: {type(exc).__name__}: {exc}"
                else:
                    text = f"the agent failed in turn {lease.turn_id}; the server's log has why"
                await self._fail_quietly(lease, "agent_error", text)
                raise AgentError(text) from exc
            finally:
                timer.cancel()
            # Past this point the answer exists: an interrupt must not cancel the commit.
            running.task = None
            count = started.message_count
            user = Message("user", message, lease.turn_id, user_at, count)
            assistant = Message("assistant", answer, lease.turn_id, time.time(), count + 1)
            record = await self.store.commit_turn(
                lease,
                user=user,
                assistant=assistant,
                metadata=turn.metadata,
                ttl_s=self.session_ttl,
                state=turn.new_state,
                then=() if then is None else then(answer),
            )
            # What the store now holds, so the next turn here reads nothing but news.
            self.window_cache.put(
                session_id,
                started.created_at,
                count + 2,
                [*started.history, user, assistant],
                self.history_window,
            )
            return record
        finally:
            del self._running[key]

    async def _fail_quietly(self, lease: Lease, code: str, message: str) -> None:
        """Record the failure; if the store is down the lease simply expires."""
        try:
            await self.store.fail_turn(lease, TurnError(code, message), self.session_ttl)
        except AgentHostError as exc:
            log.warning("could not record failure of turn %s: %s", lease.turn_id, exc)

    # -- interrupts and lease renewal -------------------------------------------------------

    def _on_interrupt(self, session_id: str, turn_id: str) -> None:
        reason = "interrupted by a newer turn"
        if not self.cancel_turn(session_id, turn_id, reason):
            key = (session_id, turn_id)
            if key in self._leasing:  # its lease may be ours already: see `_lease`
                self._leasing[key] = reason

    def runs(self, session_id: str, turn_id: str) -> bool:
        """Whether this process runs the turn now (it holds its lease)."""
        return (session_id, turn_id) in self._running

    def cancel_turn(self, session_id: str, turn_id: str, reason: str) -> bool:
        """Cancel a turn running in this process; False if it is not running here."""
        running = self._running.get((session_id, turn_id))
        if running is None or running.task is None or running.cancel_reason is not None:
            return False
        running.cancel_reason = reason
        running.task.cancel()
        return True

    def cancel_all(self, reason: str) -> int:
        """Cancel every turn running here (drain timeout); returns how many."""
        return sum(self.cancel_turn(sid, tid, reason) for sid, tid in list(self._running))

    async def _renew_forever(self) -> None:
        period = self.lease_ttl / 3
        while True:
            await asyncio.sleep(period)
            try:
                await self.renew_due(period)
            except Exception:  # the renewer must outlive any one failure
                log.exception("lease renewal failed")

    async def renew_due(self, older_than: float) -> None:
        """Renew leases held longer than `older_than` s; cancel turns whose lease was lost."""
        now = time.monotonic()
        due = [r for r in self._running.values() if now - r.leased_at >= older_than]
        if not due:
            return
        results = await asyncio.gather(
            *(self.store.renew_lease(r.lease, self.lease_ms) for r in due),
            return_exceptions=True,
        )
        for running, ok in zip(due, results, strict=True):
            if ok is True:
                running.leased_at = now
            elif ok is False:
                lease = running.lease
                log.warning("lease of %s/%s lost; cancelling", lease.session_id, lease.turn_id)
                self.cancel_turn(lease.session_id, lease.turn_id, "lease_lost")
            # An exception (store briefly down) leaves the lease to be retried next period.
