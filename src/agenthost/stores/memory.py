"""`memory://`: sessions in this process's dicts, for tests and single-process use.

It is the reference semantics of the `SessionStore` Protocol: every step runs without an
await in between, so each is atomic on the event loop. Nothing survives a restart.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

from agenthost.connections.redis_commands import Command
from agenthost.core.errors import LeaseLost, SessionExists
from agenthost.stores.base import (
    Busy,
    Completed,
    Lease,
    Message,
    SessionInfo,
    Started,
    TurnError,
    TurnRecord,
    WindowMark,
    key_reused,
    known_holds,
    no_commands,
)
from agenthost.stores.notify import ReleaseWaiters

__all__ = ["MemoryStore"]


class _Session:
    __slots__ = (
        "created_at",
        "expires_at",
        "fence",
        "lease_expires_at",
        "lease_fence",
        "lease_turn_id",
        "messages",
        "metadata",
        "state",
        "turns",
        "turns_done",
        "updated_at",
    )

    def __init__(self, now: float, ttl_s: float, metadata: dict[str, Any]) -> None:
        self.created_at = now
        self.updated_at = now
        self.expires_at = now + ttl_s
        self.metadata = metadata
        self.state: bytes | None = None
        self.messages: list[Message] = []
        self.turns: dict[str, TurnRecord] = {}
        self.turns_done = 0
        self.fence = 0
        self.lease_turn_id: str | None = None
        self.lease_fence = 0
        self.lease_expires_at = 0.0

    def info(self, session_id: str) -> SessionInfo:
        return SessionInfo(
            session_id,
            self.created_at,
            self.updated_at,
            self.turns_done,
            copy.deepcopy(self.metadata),
        )

    def live_lease(self, now: float) -> str | None:
        if self.lease_turn_id is not None and self.lease_expires_at > now:
            return self.lease_turn_id
        return None

    def holds(self, lease: Lease, now: float) -> bool:
        return (
            self.lease_turn_id == lease.turn_id
            and self.lease_fence == lease.fence
            and self.lease_expires_at > now
        )

    def drop_lease(self) -> None:
        self.lease_turn_id = None
        self.lease_expires_at = 0.0


class MemoryStore:
    """Sessions in a dict; expired ones are invisible and dropped on access or purge."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._sessions: dict[str, _Session] = {}
        self._waiters = ReleaseWaiters()
        self._interrupt_callbacks: list[Callable[[str, str], None]] = []

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._waiters.wake_all()

    async def ping(self) -> None:
        return None

    def _live(self, session_id: str, now: float) -> _Session | None:
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires_at <= now:
            del self._sessions[session_id]
            return None
        return session

    async def create_session(
        self, session_id: str, metadata: dict[str, Any], ttl_s: float
    ) -> SessionInfo:
        now = time.time()
        if self._live(session_id, now) is not None:
            raise SessionExists("this session exists")
        session = _Session(now, ttl_s, copy.deepcopy(metadata))
        self._sessions[session_id] = session
        return session.info(session_id)

    async def get_session(
        self, session_id: str, *, min_seq: int | None = None
    ) -> SessionInfo | None:
        session = self._live(session_id, time.time())
        return None if session is None else session.info(session_id)

    async def delete_session(self, session_id: str) -> bool:
        existed = self._live(session_id, time.time()) is not None
        self._sessions.pop(session_id, None)
        if existed:
            self._waiters.wake(session_id)
        return existed

    async def list_messages(
        self,
        session_id: str,
        limit: int,
        before: int | None = None,
        *,
        min_seq: int | None = None,
    ) -> list[Message] | None:
        session = self._live(session_id, time.time())
        if session is None:
            return None
        end = len(session.messages) if before is None else min(before, len(session.messages))
        return session.messages[max(0, end - limit) : end]

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
        now = time.time()
        session = self._live(session_id, now)
        created = session is None
        if session is not None:
            record = session.turns.get(turn_id)
            if record is not None and fingerprint and record.fingerprint not in ("", fingerprint):
                raise key_reused(turn_id)
            if record is not None and record.status == "completed":
                return Completed(copy.copy(record))
            holder = session.live_lease(now)
            if holder is not None:
                return Busy(holder)
        else:
            session = _Session(now, ttl_s, {})
            self._sessions[session_id] = session
        session.fence += 1
        session.lease_turn_id = turn_id
        session.lease_fence = session.fence
        session.lease_expires_at = now + lease_ms / 1000
        session.expires_at = now + ttl_s
        session.turns[turn_id] = TurnRecord(
            turn_id, session_id, "running", message, now, now, fingerprint=fingerprint
        )
        metadata = copy.deepcopy(session.metadata)
        if metadata_patch:
            metadata.update(copy.deepcopy(metadata_patch))
        count = len(session.messages)
        delta = known_holds(known, session.created_at, count)
        start = max(0, count - window)
        if delta:
            assert known is not None
            start = max(start, known.count)
        history = session.messages[start:] if window > 0 else []
        return Started(
            Lease(session_id, turn_id, session.fence, fingerprint),
            history,
            metadata,
            count,
            created,
            session.created_at,
            delta,
            session.state,
        )

    def _held(self, lease: Lease, now: float) -> _Session | None:
        session = self._live(lease.session_id, now)
        if session is None or not session.holds(lease, now):
            return None
        return session

    def runs_after_commit(self, wire: object) -> bool:
        return False

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
        no_commands(then)
        now = time.time()
        session = self._held(lease, now)
        if session is None:
            raise LeaseLost(f"turn {lease.turn_id} no longer holds its session's lease")
        session.messages.append(user)
        session.messages.append(assistant)
        session.metadata = copy.deepcopy(metadata)
        if state is not None:
            session.state = state
        session.turns_done += 1
        session.updated_at = now
        session.expires_at = now + ttl_s
        record = session.turns[lease.turn_id]
        record.status = "completed"
        record.response = assistant.content
        record.error = None
        record.updated_at = now
        session.drop_lease()
        self._waiters.wake(lease.session_id)
        return copy.copy(record)

    async def fail_turn(self, lease: Lease, error: TurnError, ttl_s: float) -> TurnRecord | None:
        now = time.time()
        session = self._held(lease, now)
        if session is None:
            return None
        record = session.turns[lease.turn_id]
        record.status = "failed"
        record.error = error
        record.updated_at = now
        session.expires_at = now + ttl_s
        session.drop_lease()
        self._waiters.wake(lease.session_id)
        return copy.copy(record)

    async def renew_lease(self, lease: Lease, lease_ms: int) -> bool:
        now = time.time()
        session = self._held(lease, now)
        if session is None:
            return False
        session.lease_expires_at = now + lease_ms / 1000
        return True

    async def release_lease(self, lease: Lease) -> bool:
        now = time.time()
        session = self._held(lease, now)
        if session is None:
            return False
        session.drop_lease()
        self._waiters.wake(lease.session_id)
        return True

    async def running_turn(self, session_id: str) -> str | None:
        now = time.time()
        session = self._live(session_id, now)
        return None if session is None else session.live_lease(now)

    async def unfinished_turn(self, session_id: str) -> str | None:
        session = self._live(session_id, time.time())
        if session is None or not session.turns:
            return None
        newest = max(session.turns.values(), key=lambda record: record.created_at)
        return newest.turn_id if newest.status == "running" else None

    async def get_turn(self, session_id: str, turn_id: str) -> TurnRecord | None:
        now = time.time()
        session = self._live(session_id, now)
        if session is None:
            return None
        record = session.turns.get(turn_id)
        if record is None:
            return None
        out = copy.copy(record)
        if out.status == "running" and session.live_lease(now) != turn_id:
            out.status = "pending"
        return out

    async def wait_for_release(self, session_id: str, timeout: float) -> None:
        await self._waiters.wait(session_id, timeout)

    async def request_interrupt(self, session_id: str, turn_id: str) -> None:
        for callback in self._interrupt_callbacks:
            callback(session_id, turn_id)

    def on_interrupt(self, callback: Callable[[str, str], None]) -> None:
        self._interrupt_callbacks.append(callback)

    async def purge_expired(self) -> int:
        now = time.time()
        expired = [sid for sid, s in self._sessions.items() if s.expires_at <= now]
        for sid in expired:
            del self._sessions[sid]
        return len(expired)
