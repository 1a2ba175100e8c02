"""`InstrumentedStore`: any `SessionStore` with each operation timed into
`agenthost_store_operation_duration_seconds{operation}` and, when tracing is on, a span per
operation (`store.begin_turn`, ...), so no backend carries metrics code of its own.

Timing costs two clock reads and a bisect per call; with tracing off the only other cost is
one attribute check. `wait_for_release` is not timed: its duration is a wait for another
turn, not the store's latency.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any, TypeVar

from agenthost.connections.redis_commands import Command
from agenthost.observability.metrics import Histogram, Metrics
from agenthost.stores.base import (
    Busy,
    Completed,
    Lease,
    Message,
    SessionInfo,
    SessionStore,
    Started,
    TurnError,
    TurnRecord,
    WindowMark,
)

if TYPE_CHECKING:
    from agenthost.observability.tracing import Tracing

__all__ = ["InstrumentedStore"]

T = TypeVar("T")


class InstrumentedStore:
    """A `SessionStore` that times and traces every call to `inner`; other attributes of
    the backend (its URL, backend-specific helpers) read through."""

    def __init__(self, inner: SessionStore, metrics: Metrics, tracing: Tracing | None = None):
        self.inner = inner
        self.url = inner.url
        self._tracing = tracing
        # Looked up once: a call then costs no dict access.
        h = metrics.store_histogram
        self._begin_turn = h("begin_turn")
        self._commit_turn = h("commit_turn")
        self._fail_turn = h("fail_turn")
        self._renew_lease = h("renew_lease")
        self._release_lease = h("release_lease")
        self._get_turn = h("get_turn")
        self._get_session = h("get_session")
        self._running_turn = h("running_turn")
        self._unfinished_turn = h("unfinished_turn")
        self._create_session = h("create_session")
        self._delete_session = h("delete_session")
        self._list_messages = h("list_messages")
        self._request_interrupt = h("request_interrupt")
        self._ping = h("ping")
        self._purge_expired = h("purge_expired")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def _timed(self, name: str, call: Coroutine[Any, Any, T], histogram: Histogram) -> T:
        if self._tracing is not None:
            call = self._tracing.traced(call, "store." + name)
        started = perf_counter()
        try:
            return await call
        finally:
            histogram.observe(perf_counter() - started)

    # -- the steps of a turn: written out, they are on every turn's path ----------------------

    async def begin_turn(
        self,
        session_id: str,
        turn_id: str,
        message: str,
        *,
        metadata_patch: dict[str, Any] | None,
        lease_ms: int,
        window: int,
        ttl_s: float,
        fingerprint: str = "",
        known: WindowMark | None = None,
    ) -> Started | Completed | Busy:
        call = self.inner.begin_turn(
            session_id,
            turn_id,
            message,
            metadata_patch=metadata_patch,
            lease_ms=lease_ms,
            window=window,
            ttl_s=ttl_s,
            fingerprint=fingerprint,
            known=known,
        )
        if self._tracing is not None:
            call = self._tracing.traced(call, "store.begin_turn")
        started = perf_counter()
        try:
            return await call
        finally:
            self._begin_turn.observe(perf_counter() - started)

    def runs_after_commit(self, wire: object) -> bool:
        return self.inner.runs_after_commit(wire)

    async def commit_turn(
        self,
        lease: Lease,
        *,
        user: Message,
        assistant: Message,
        metadata: dict[str, Any],
        ttl_s: float,
        state: bytes | None = None,
        then: Sequence[Command] = (),
    ) -> TurnRecord:
        call = self.inner.commit_turn(
            lease,
            user=user,
            assistant=assistant,
            metadata=metadata,
            ttl_s=ttl_s,
            state=state,
            then=then,
        )
        if self._tracing is not None:
            call = self._tracing.traced(call, "store.commit_turn")
        started = perf_counter()
        try:
            return await call
        finally:
            self._commit_turn.observe(perf_counter() - started)

    async def fail_turn(self, lease: Lease, error: TurnError, ttl_s: float) -> TurnRecord | None:
        return await self._timed(
            "fail_turn", self.inner.fail_turn(lease, error, ttl_s), self._fail_turn
        )

    async def renew_lease(self, lease: Lease, lease_ms: int) -> bool:
        return await self._timed(
            "renew_lease", self.inner.renew_lease(lease, lease_ms), self._renew_lease
        )

    async def release_lease(self, lease: Lease) -> bool:
        return await self._timed(
            "release_lease", self.inner.release_lease(lease), self._release_lease
        )

    # -- everything else ----------------------------------------------------------------------

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def ping(self) -> None:
        await self._timed("ping", self.inner.ping(), self._ping)

    async def create_session(
        self, session_id: str, metadata: dict[str, Any], ttl_s: float
    ) -> SessionInfo:
        return await self._timed(
            "create_session",
            self.inner.create_session(session_id, metadata, ttl_s),
            self._create_session,
        )

    async def get_session(
        self, session_id: str, *, min_seq: int | None = None
    ) -> SessionInfo | None:
        return await self._timed(
            "get_session",
            self.inner.get_session(session_id, min_seq=min_seq),
            self._get_session,
        )

    async def delete_session(self, session_id: str) -> bool:
        return await self._timed(
            "delete_session", self.inner.delete_session(session_id), self._delete_session
        )

    async def list_messages(
        self,
        session_id: str,
        limit: int,
        before: int | None = None,
        *,
        min_seq: int | None = None,
    ) -> list[Message] | None:
        return await self._timed(
            "list_messages",
            self.inner.list_messages(session_id, limit, before, min_seq=min_seq),
            self._list_messages,
        )

    async def get_turn(self, session_id: str, turn_id: str) -> TurnRecord | None:
        return await self._timed(
            "get_turn", self.inner.get_turn(session_id, turn_id), self._get_turn
        )

    async def running_turn(self, session_id: str) -> str | None:
        return await self._timed(
            "running_turn", self.inner.running_turn(session_id), self._running_turn
        )

    async def unfinished_turn(self, session_id: str) -> str | None:
        return await self._timed(
            "unfinished_turn", self.inner.unfinished_turn(session_id), self._unfinished_turn
        )

    async def wait_for_release(self, session_id: str, timeout: float) -> None:
        await self.inner.wait_for_release(session_id, timeout)

    async def request_interrupt(self, session_id: str, turn_id: str) -> None:
        await self._timed(
            "request_interrupt",
            self.inner.request_interrupt(session_id, turn_id),
            self._request_interrupt,
        )

    def on_interrupt(self, callback: Callable[[str, str], None]) -> None:
        self.inner.on_interrupt(callback)

    async def purge_expired(self) -> int:
        return await self._timed("purge_expired", self.inner.purge_expired(), self._purge_expired)

    def __repr__(self) -> str:
        return f"InstrumentedStore({self.inner!r})"
