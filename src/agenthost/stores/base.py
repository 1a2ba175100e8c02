"""The session store contract: what every backend (memory, sqlite, redis, ...) guarantees.

The store is where a conversation lives between turns, so any process can serve any turn.
Its operations are the steps of a turn (docs/design.md, "What nothing lost means"), each
one atomic and, where the backend allows, one round trip:

* `begin_turn` — one step: return the stored answer if this turn already completed; otherwise
  take the session's lease (one running turn per session, fleet-wide) with a new fencing
  version, create the session if it is unknown, record the turn as running with its user
  message, refresh the TTL, and hand back the history window and the metadata.
  A turn id already recorded with a different request fingerprint is refused
  (`IdempotencyKeyReused`), before anything else is looked at.
* `commit_turn` — one step: check that the lease is still ours (owner and fence), append the
  user and assistant messages, save the metadata (and the agent's state, if it gave one),
  mark the turn completed, release the lease, refresh the TTL. The cost does not depend on
  the history length.
* `fail_turn` — one step: mark the turn failed with a code (its user message stays in the
  turn record, nothing is appended to the history) and release the lease.

Every key or row of a session shares its TTL; an expired session is invisible to every read
and is purged. Times are Unix seconds (float).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

from agenthost.connections.redis_commands import Command
from agenthost.core.errors import IdempotencyKeyReused

__all__ = [
    "Busy",
    "Completed",
    "Lease",
    "Message",
    "SessionInfo",
    "SessionStore",
    "Started",
    "TurnError",
    "TurnRecord",
    "TurnStatus",
    "WindowMark",
    "key_reused",
    "known_holds",
    "no_commands",
]

TurnStatus = Literal["pending", "running", "completed", "failed"]
Role = Literal["user", "assistant"]


def no_commands(then: Sequence[Command]) -> None:
    """`commit_turn` of a store that runs no Redis commands: it is given none
    (`runs_after_commit` is False)."""
    if then:
        raise ValueError("this store runs no Redis commands in a commit")


class Message(msgspec.Struct, frozen=True):
    """One message of a session's history; `seq` is its 0-based position in the history."""

    role: Role
    content: str
    turn_id: str
    created_at: float
    seq: int


class SessionInfo(msgspec.Struct):
    """A session's summary; `turns` counts committed turns."""

    session_id: str
    created_at: float
    updated_at: float
    turns: int
    metadata: dict[str, Any]


class TurnError(msgspec.Struct, frozen=True):
    """Why a turn failed: a stable `code` (e.g. `agent_error`, `interrupted`) and a message."""

    code: str
    message: str


class TurnRecord(msgspec.Struct):
    """A turn as stored: its user message, and once it ends, its response or error.

    `status` is `running` while a live lease of this turn exists; a turn recorded as running
    whose lease is gone (its process died) reads back as `pending`: a retry runs it again.
    """

    turn_id: str
    session_id: str
    status: TurnStatus
    message: str
    created_at: float
    updated_at: float
    response: str | None = None
    error: TurnError | None = None
    fingerprint: str = ""
    """The request's fingerprint (message + metadata) as `begin_turn` got it; "" for none."""


class Lease(msgspec.Struct, frozen=True):
    """Proof of holding a session's lease: the owning turn and its fencing version.

    Fences only grow within a session, so a commit carrying an older fence than the
    session's current one is refused even if the lease key happens to exist again.
    """

    session_id: str
    turn_id: str
    fence: int
    fingerprint: str = ""
    """The fingerprint of the request the turn runs, so the records the fenced steps write
    keep it."""


class WindowMark(msgspec.Struct, frozen=True):
    """What a caller already holds of a session's history: every message before seq `count`
    of the session as created at `created_at` (a session deleted or expired and started again
    is another one, with another `created_at`)."""

    created_at: float
    count: int


class Started(msgspec.Struct):
    """`begin_turn` took the lease: run the agent on `history` (oldest first) and `metadata`.

    `message_count` is the number of messages in the history before this turn, so the new
    user message gets seq `message_count` and the answer `message_count + 1`.

    `created_at` names the session's incarnation (0.0 from a store that does not say), and
    `delta` is True when `history` holds only the messages from the caller's `known` mark on
    (the caller adds the ones it has); False: `history` is the whole window. `state` is the
    session's agent state as the last commit saved it (a hosted framework's checkpoint or
    message history; opaque bytes), None if none was ever saved.
    """

    lease: Lease
    history: list[Message]
    metadata: dict[str, Any]
    message_count: int
    created: bool
    created_at: float = 0.0
    delta: bool = False
    state: bytes | None = None


class Completed(msgspec.Struct):
    """`begin_turn` found this turn already completed: the stored answer, no agent call."""

    record: TurnRecord


class Busy(msgspec.Struct):
    """`begin_turn` found the lease held by another live turn (`running_turn_id`).

    When `running_turn_id` equals the requested turn id, the same turn is already running
    (a retry arrived while the first attempt is in flight).
    """

    running_turn_id: str


BeginResult = Started | Completed | Busy


def known_holds(known: WindowMark | None, created_at: float, count: int) -> bool:
    """Whether a caller's mark is of this incarnation of the session and not ahead of it, so
    the messages it holds are the session's first `known.count`."""
    return known is not None and known.created_at == created_at and known.count <= count


def key_reused(turn_id: str) -> IdempotencyKeyReused:
    """What `begin_turn` raises for a turn id recorded with another request's fingerprint."""
    return IdempotencyKeyReused(
        f"Idempotency-Key {turn_id} was sent before with a different request (message or "
        "metadata); use a new key for a new request"
    )


@runtime_checkable
class SessionStore(Protocol):
    """A backend that keeps sessions; one conformance suite checks every implementation.

    Errors: operations raise `agenthost.core.errors.StoreUnavailable` when the backend cannot be
    reached (nothing half-written), `LeaseLost` when a fenced step finds the lease not ours,
    `SessionExists` from `create_session`, `IdempotencyKeyReused` from `begin_turn`.
    Everything else returns a value.
    """

    url: str

    async def open(self) -> None:
        """Connect / create the schema. Called once before use."""
        ...

    async def close(self) -> None:
        """Release connections and background tasks."""
        ...

    async def ping(self) -> None:
        """Return if the backend is reachable, else raise StoreUnavailable."""
        ...

    async def create_session(
        self, session_id: str, metadata: dict[str, Any], ttl_s: float
    ) -> SessionInfo:
        """Create an empty session; raise SessionExists if it exists (and has not expired)."""
        ...

    async def get_session(
        self, session_id: str, *, min_seq: int | None = None
    ) -> SessionInfo | None:
        """The session, or None if unknown or expired.

        `min_seq`: read-your-writes for a store that answers reads from a replica: the
        answer reflects at least the message with this seq (a backend with one copy of
        the data always does)."""
        ...

    async def delete_session(self, session_id: str) -> bool:
        """Delete the session with its messages, turns (the idempotency records) and lease,
        in one step; False if it did not exist. A turn running meanwhile has lost its lease:
        its renew, commit and fail find it gone and write nothing."""
        ...

    async def list_messages(
        self,
        session_id: str,
        limit: int,
        before: int | None = None,
        *,
        min_seq: int | None = None,
    ) -> list[Message] | None:
        """Up to `limit` messages with seq < `before` (or the newest), oldest first.

        Reads only the messages returned, never the whole history. None if no session.
        `min_seq` as in `get_session`.
        """
        ...

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
        """The first step of a turn; see the module docstring. `known`: the caller holds
        the messages before `known.count` already; a store may then answer only the newer
        ones of the window (`Started.delta`), or ignore it. `metadata_patch` is merged
        (shallowly) into the session metadata handed back in `Started`, not saved yet.

        `fingerprint` is kept in the turn record. If a record of `turn_id` exists with
        another (non-empty) fingerprint, raise IdempotencyKeyReused and change nothing: the
        key names a different request."""
        ...

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
        """Append both messages, save metadata, complete the turn, release the lease.

        `state` (bytes) replaces the session's agent state in the same step; None keeps it.
        A failed turn, or one whose process died, never writes it: the next attempt starts
        from the state of the last commit. Deleting the session deletes it.
        Raises LeaseLost (nothing written) if the lease is not held by `lease` any more.

        `then`: Redis commands run in the same atomic step once the commit succeeded, and
        only then (a refused commit runs none): what the same server's other parts do once
        a turn is committed (a queued turn's acknowledgement and the message that ends its
        api process's wait), in the commit's round trip. Only a store that
        `runs_after_commit` is given any.
        """
        ...

    def runs_after_commit(self, wire: object) -> bool:
        """Whether `commit_turn` runs `then` commands meant for `wire` (a Redis server's
        shared pipelining client, `RedisWire`): a Redis store on that single server."""
        ...

    async def fail_turn(self, lease: Lease, error: TurnError, ttl_s: float) -> TurnRecord | None:
        """Mark the turn failed and release the lease; None (nothing written) if the lease
        is not ours any more."""
        ...

    async def renew_lease(self, lease: Lease, lease_ms: int) -> bool:
        """Extend the lease to `lease_ms` from now; False if it is not ours any more."""
        ...

    async def release_lease(self, lease: Lease) -> bool:
        """Drop the lease if it is ours (compare-and-delete); False otherwise."""
        ...

    async def get_turn(self, session_id: str, turn_id: str) -> TurnRecord | None:
        """The turn record (status `pending` if running but its lease is gone), or None."""
        ...

    async def running_turn(self, session_id: str) -> str | None:
        """The id of the turn holding the session's live lease (one runs now), or None."""
        ...

    async def unfinished_turn(self, session_id: str) -> str | None:
        """The id of the session's newest turn if it has not ended: running now, or pending
        (its process died; a retry runs it again). None when the newest turn ended, or the
        session has none. What a client resuming "the chat" means (the AI SDK's resume)."""
        ...

    async def wait_for_release(self, session_id: str, timeout: float) -> None:
        """Return when the session's lease may have been released, or after `timeout` s.

        A notification, not a poll: backends wake waiters when a commit, failure or release
        drops a lease. Callers re-check with `begin_turn`, so a spurious wake-up is harmless;
        the timeout covers leases that expire without a release.
        """
        ...

    async def request_interrupt(self, session_id: str, turn_id: str) -> None:
        """Ask whichever process runs `turn_id` of this session to cancel it (a broadcast
        for shared backends; a direct call of the local callbacks for embedded ones)."""
        ...

    def on_interrupt(self, callback: Callable[[str, str], None]) -> None:
        """Register `callback(session_id, turn_id)`, called for every interrupt request
        from any process. The engine registers one to cancel its local turns."""
        ...

    async def purge_expired(self) -> int:
        """Delete expired sessions now; return how many. (Backends with native expiry may
        return 0.)"""
        ...
