"""The work queue contract: turns recorded by `api` processes, run by `worker` processes.

A queued turn is delivered to one worker at a time and stays owned by it while the worker
touches it (a heartbeat, every third of `claim_after`); a turn whose worker stopped touching
it (killed, paused) is delivered again to another worker after `claim_after` seconds. A
worker acknowledges a turn only after the turn's fenced commit (or its recorded failure), so
a worker that dies at any point before leaves the turn to be delivered again; the session
store's fence and idempotent `begin_turn` make the turn commit once however often it is
delivered.

Fair across tenants: each tenant has its own queue, and `take` serves the tenants
round-robin, one turn of each in turn, so one tenant's ten thousand queued turns delay
another tenant's single turn by at most one turn per worker slot. Within a session, turns
run in the order they were queued (`earlier`). A tenant may have at most
`max_queued` turns queued or running (`QueueFull`, 429, past it).

Withdrawn turns: a turn is cancelled (`cancel`) or its session deleted (`drop_session`)
while on the queue. One no worker has taken yet is removed at once, and the caller ends its
stream; one a worker holds is marked, and that worker finds it withdrawn (`earlier` raises
`Withdrawn`) and ends it without running it.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

from agenthost.connections.redis_commands import Command

__all__ = ["Delivery", "QueueStats", "QueuedTurn", "Withdrawn", "WorkQueue", "tenant_of"]

OnBusy = Literal["reject", "enqueue", "interrupt"]


class QueuedTurn(msgspec.Struct, frozen=True):
    """What a worker needs to run a turn: the request as the api process accepted it."""

    session_id: str
    """The store's (tenant-scoped) session id."""
    turn_id: str
    message: str
    metadata: dict[str, Any] | None = None
    on_busy: OnBusy = "enqueue"
    callback_url: str | None = None
    resume: bool = False
    """The turn has a stream already (an earlier attempt): its worker numbers on after it."""
    enqueued_at: float = 0.0
    streamed: bool = True
    """Its events are read as they come (a streamed or background turn). False for a plain
    turn, which answers once: its worker publishes its final event only, as `--role all`
    publishes none for a plain turn."""
    reply_to: str | None = None
    """The inbox (`StreamBroker.inbox`) of the api process waiting for the turn's end: its
    worker sends the final event there (`StreamBroker.notify_end`), one message per turn."""
    private: bool = False
    """A plain turn whose id its api process made: no other request can name it, so nobody
    reads its stream, and its worker publishes none (as `--role all` publishes nothing for a
    plain turn); its end goes to `reply_to` alone."""

    @property
    def tenant(self) -> str:
        return tenant_of(self.session_id)


def tenant_of(session_id: str) -> str:
    """The tenant a (scoped) session id belongs to; "" for the unauthenticated tenant."""
    tenant, _, _ = session_id.rpartition("/")
    return tenant


class Withdrawn(Exception):
    """The delivered turn was cancelled or its session deleted after it was queued: its
    worker ends it (an `interrupted` error event) and acknowledges it, without running it."""


class Delivery(msgspec.Struct, frozen=True):
    """A queued turn handed to one worker; `receipt` names it to `touch`, `ack`, `release`."""

    turn: QueuedTurn
    receipt: str
    attempt: int = 1
    """1 for a first delivery; more when the turn was taken back from a worker that stopped."""
    alone: bool = False
    """No other turn of its session was queued or running when it was queued: no turn of
    the session can be earlier (`earlier` answers False without asking the store)."""
    marked: bool = False
    """An `alone` turn whose queued marker the take found in place (not withdrawn) as it
    took the turn: its first `earlier` answers False without reading the marker again."""


class QueueStats(msgspec.Struct, frozen=True):
    """Turns queued or running, and the age of the oldest, fleet-wide and per tenant."""

    depth: int
    oldest_age_s: float
    oldest_age_by_tenant: dict[str, float] = msgspec.field(default_factory=dict)
    """Tenant ("" unauthenticated) -> the age of its oldest turn queued or running."""


@runtime_checkable
class WorkQueue(Protocol):
    url: str
    claim_after: float
    """Seconds a taken turn may go untouched before another worker may take it."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def enqueue(self, turn: QueuedTurn) -> bool:
        """Queue `turn`; False if a turn of that id is queued or running already (nothing
        done). Raises QueueFull (429) when its tenant has `max_queued` turns queued, and,
        for a turn with `on_busy="reject"`, SessionBusy (409) when another turn of its
        session is queued or running (checked and queued in one step)."""
        ...

    async def take(self, consumer: str, count: int, wait: float) -> list[Delivery]:
        """Up to `count` turns for worker `consumer`, one per tenant round-robin, first the
        turns whose worker stopped touching them for `claim_after` seconds. Waits up to
        `wait` seconds for one when none is queued."""
        ...

    async def touch(self, consumer: str, deliveries: list[Delivery]) -> None:
        """`consumer` still runs these: do not deliver them again."""
        ...

    async def ack(self, delivery: Delivery) -> None:
        """The turn ended (committed or failed, recorded in the store): remove it."""
        ...

    def ack_commands(self, delivery: Delivery) -> tuple[object, list[Command]] | None:
        """`ack` as Redis commands, with the client they are meant for (a Redis server's
        shared pipelining client), for another part to run in a step of its own on that
        server (a commit's script: `SessionStore.commit_turn`'s `then`); None where the
        queue cannot be acknowledged so (call `ack`)."""
        ...

    async def release(self, consumer: str, delivery: Delivery) -> None:
        """Hand the turn back (a draining worker): deliverable again to another at once."""
        ...

    async def earlier(self, delivery: Delivery) -> bool:
        """Whether a turn of the same session queued before this one is still queued or
        running: a worker waits for it, so a session's turns run in the order they came.
        Raises Withdrawn if this turn was cancelled or its session deleted meanwhile."""
        ...

    async def cancel(self, session_id: str, turn_id: str) -> bool:
        """Withdraw a queued turn: True if no worker had taken it (removed; the caller ends
        its stream); False if it is not queued, or a worker holds it (marked: that worker
        finds it withdrawn before it runs, or is asked to interrupt it as a running turn)."""
        ...

    async def drop_session(self, session_id: str) -> list[str]:
        """Withdraw every queued turn of a deleted session. Returns the ids of those no
        worker had taken (removed; the caller ends their streams); the others are marked,
        and their workers end them without running them."""
        ...

    async def is_queued(self, session_id: str, turn_id: str) -> bool:
        """Whether a turn of that id is queued or running (not yet acknowledged)."""
        ...

    async def stats(self) -> QueueStats: ...
