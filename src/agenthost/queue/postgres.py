"""`postgresql://`: the work queue as a table (`stores/migrations/0007_turn_queue.sql`).

A worker takes a row with `SELECT ... FOR UPDATE SKIP LOCKED` (workers never wait on each
other's rows) and marks it `taken_by` itself until `taken_until` (now + `claim_after`,
pushed on by each touch). A row whose `taken_until` passed — its worker was killed or
paused — is taken by the next worker that asks. The row is deleted when its worker
acknowledges the turn, after the fenced commit. Tenants are served round-robin: each take
serves the tenant whose turn was taken least recently (`agenthost_queue_tenants.served`).
An enqueue `NOTIFY`s `agenthost_queue`; idle workers `LISTEN` to it, so a turn is taken as
soon as it is queued, and poll at most every second besides (for rows whose worker stopped).

A turn with `on_busy=reject` is queued under a transaction-scoped advisory lock on its
session, after a look for the session's other rows, so two such turns never both pass. A
withdrawn turn (cancelled, or its session deleted) that no worker holds is deleted; one a
worker holds keeps its row with its turn id renamed `<turn id> withdrawn <row id>` (no turn
id has a space), so its worker, or the next one if it stopped, finds it withdrawn and ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import asyncpg
import msgspec

from agenthost.connections.redis_commands import Command
from agenthost.core.errors import QueueFull, SessionBusy, StoreUnavailable
from agenthost.queue.base import Delivery, QueuedTurn, QueueStats, Withdrawn
from agenthost.stores.pg_pool import PgPool
from agenthost.stores.pg_schema import migrate_schema
from agenthost.stores.postgres import FAILURES

__all__ = ["PostgresWorkQueue"]

CHANNEL = "agenthost_queue"

_encode = msgspec.json.encode
_decode = msgspec.json.Decoder(QueuedTurn).decode

_ENQUEUE = """
WITH added AS (
    INSERT INTO agenthost_turn_queue (tenant, session_id, turn_id, job)
    SELECT $1, $2, $3, $4
    WHERE $5 = 0 OR (SELECT count(*) FROM agenthost_turn_queue WHERE tenant = $1) < $5
    ON CONFLICT (session_id, turn_id) DO NOTHING
    RETURNING id
)
SELECT id, pg_notify('agenthost_queue', '') FROM added
"""

# The least recently served tenant with a turn free to take; its oldest such turn.
_TAKE = """
WITH next AS (
    SELECT q.id, t.tenant FROM agenthost_queue_tenants t
    CROSS JOIN LATERAL (
        SELECT id FROM agenthost_turn_queue q
        WHERE q.tenant = t.tenant AND (q.taken_until IS NULL OR q.taken_until < now())
        ORDER BY q.id LIMIT 1
        FOR UPDATE SKIP LOCKED
    ) q
    ORDER BY t.served LIMIT 1
), served AS (
    UPDATE agenthost_queue_tenants t SET served = nextval('agenthost_queue_served')
    FROM next WHERE t.tenant = next.tenant
)
UPDATE agenthost_turn_queue q
SET taken_by = $1, taken_until = now() + make_interval(secs => $2), attempts = q.attempts + 1
FROM next WHERE q.id = next.id
RETURNING q.id, q.job, q.attempts
"""


# Withdraw a session's turns ($2: one turn; NULL: all of them), their rows locked first (so a
# take under way ends before): those nobody holds go, the others are renamed for their
# workers to find. The ids of those that went.
_LOCK_SESSION_ROWS = """
SELECT 1 FROM agenthost_turn_queue
WHERE session_id = $1 AND ($2::text IS NULL OR turn_id = $2) FOR UPDATE
"""
_WITHDRAW = """
WITH marked AS (
    UPDATE agenthost_turn_queue SET turn_id = turn_id || ' withdrawn ' || id
    WHERE session_id = $1 AND ($2::text IS NULL OR turn_id = $2) AND taken_by IS NOT NULL
      AND position(' ' IN turn_id) = 0
)
DELETE FROM agenthost_turn_queue
WHERE session_id = $1 AND ($2::text IS NULL OR turn_id = $2) AND taken_by IS NULL
  AND position(' ' IN turn_id) = 0
RETURNING turn_id
"""


class PostgresWorkQueue:
    """The queue in the store's PostgreSQL database (see the module's docstring)."""

    def __init__(self, url: str, *, claim_after: float = 10.0, max_queued: int = 0) -> None:
        self.url = url
        self.claim_after = claim_after
        self.max_queued = max_queued
        self._db = PgPool(url, "postgresql queue", max_size=10)
        self._listener: asyncpg.Connection | None = None
        self._queued = asyncio.Event()

    async def open(self) -> None:
        await self._db.open(migrate_schema)  # the store migrates too; this one is idempotent

    async def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(*FAILURES):
                await self._listener.close()
            self._listener = None
        await self._db.close()

    @property
    def pool(self) -> asyncpg.Pool:
        return self._db.pool

    async def _listen(self) -> None:
        """LISTEN for enqueues (first take only: api processes never listen)."""
        if self._listener is not None and not self._listener.is_closed():
            return
        self._listener = await asyncpg.connect(self._db.dsn, timeout=self._db.connect_timeout)
        await self._listener.add_listener(CHANNEL, lambda *_: self._queued.set())

    async def enqueue(self, turn: QueuedTurn) -> bool:
        if not turn.enqueued_at:
            turn = msgspec.structs.replace(turn, enqueued_at=time.time())
        try:
            async with self.pool.acquire() as conn:
                await conn.execute(
                    "INSERT INTO agenthost_queue_tenants (tenant) VALUES ($1) "
                    "ON CONFLICT (tenant) DO NOTHING",
                    turn.tenant,
                )
                if turn.on_busy == "reject":
                    async with conn.transaction():
                        added = await self._enqueue_alone(conn, turn)
                else:
                    added = await self._insert(conn, turn)
                if added is not None:
                    return True
                if await self._exists(conn, turn.session_id, turn.turn_id):
                    return False
        except FAILURES as exc:
            raise StoreUnavailable(f"postgresql queue: {exc}") from exc
        raise QueueFull(f"tenant has {self.max_queued} turns queued; retry when some have run")

    async def _insert(self, conn: Any, turn: QueuedTurn) -> Any:
        return await conn.fetchval(
            _ENQUEUE, turn.tenant, turn.session_id, turn.turn_id, _encode(turn), self.max_queued
        )

    async def _enqueue_alone(self, conn: Any, turn: QueuedTurn) -> Any:
        """on_busy=reject: queue the turn only if no other turn of its session is queued or
        running (SessionBusy), under the session's lock for the transaction's length."""
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", turn.session_id)
        rows = await conn.fetch(
            "SELECT turn_id FROM agenthost_turn_queue WHERE session_id = $1 ORDER BY id",
            turn.session_id,
        )
        others = [r["turn_id"] for r in rows]
        if turn.turn_id in others:
            return None  # queued already: the caller says so
        if others:
            raise SessionBusy(f"this session is running turn {others[0].split(' ', 1)[0]}")
        return await self._insert(conn, turn)

    async def take(self, consumer: str, count: int, wait: float) -> list[Delivery]:
        deadline = time.monotonic() + wait
        try:
            await self._listen()
            while True:
                self._queued.clear()
                taken: list[Delivery] = []
                async with self.pool.acquire() as conn:
                    while len(taken) < count:
                        row = await conn.fetchrow(_TAKE, consumer, self.claim_after)
                        if row is None:
                            break
                        taken.append(Delivery(_decode(row["job"]), str(row["id"]), row["attempts"]))
                remaining = deadline - time.monotonic()
                if taken or remaining <= 0:
                    return taken
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, 1.0)):
                        await self._queued.wait()
        except FAILURES as exc:
            raise StoreUnavailable(f"postgresql queue: {exc}") from exc

    async def touch(self, consumer: str, deliveries: list[Delivery]) -> None:
        ids = [int(d.receipt) for d in deliveries]
        await self._execute(
            "UPDATE agenthost_turn_queue SET taken_until = now() + make_interval(secs => $3) "
            "WHERE id = ANY($1::bigint[]) AND taken_by = $2",
            ids,
            consumer,
            self.claim_after,
        )

    def ack_commands(self, delivery: Delivery) -> tuple[object, list[Command]] | None:
        return None  # a row, not a Redis entry: `ack` deletes it

    async def ack(self, delivery: Delivery) -> None:
        await self._execute("DELETE FROM agenthost_turn_queue WHERE id = $1", int(delivery.receipt))

    async def release(self, consumer: str, delivery: Delivery) -> None:
        await self._execute(
            "UPDATE agenthost_turn_queue SET taken_until = NULL, taken_by = NULL "
            "WHERE id = $1 AND taken_by = $2",
            int(delivery.receipt),
            consumer,
        )
        await self._execute("SELECT pg_notify('agenthost_queue', '')")

    async def earlier(self, delivery: Delivery) -> bool:
        try:
            row = await self.pool.fetchrow(
                "SELECT EXISTS (SELECT 1 FROM agenthost_turn_queue "
                "WHERE session_id = $1 AND id < $2) AS before, "
                "(SELECT turn_id FROM agenthost_turn_queue WHERE id = $2) AS turn_id",
                delivery.turn.session_id,
                int(delivery.receipt),
            )
        except FAILURES as exc:
            raise StoreUnavailable(f"postgresql queue: {exc}") from exc
        assert row is not None
        if row["turn_id"] != delivery.turn.turn_id:
            raise Withdrawn(delivery.turn.turn_id)
        return bool(row["before"])

    async def cancel(self, session_id: str, turn_id: str) -> bool:
        return bool(await self._withdraw(session_id, turn_id))

    async def drop_session(self, session_id: str) -> list[str]:
        return await self._withdraw(session_id, None)

    async def _withdraw(self, session_id: str, turn_id: str | None) -> list[str]:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(_LOCK_SESSION_ROWS, session_id, turn_id)
                rows = await conn.fetch(_WITHDRAW, session_id, turn_id)
        except FAILURES as exc:
            raise StoreUnavailable(f"postgresql queue: {exc}") from exc
        return [r["turn_id"] for r in rows]

    async def is_queued(self, session_id: str, turn_id: str) -> bool:
        try:
            async with self.pool.acquire() as conn:
                return await self._exists(conn, session_id, turn_id)
        except FAILURES as exc:
            raise StoreUnavailable(f"postgresql queue: {exc}") from exc

    @staticmethod
    async def _exists(conn: Any, session_id: str, turn_id: str) -> bool:
        found = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM agenthost_turn_queue "
            "WHERE session_id = $1 AND turn_id = $2)",
            session_id,
            turn_id,
        )
        return bool(found)

    async def stats(self) -> QueueStats:
        try:
            rows = await self.pool.fetch(
                "SELECT tenant, count(*) AS depth, "
                "extract(epoch FROM now() - min(enqueued_at)) AS age "
                "FROM agenthost_turn_queue GROUP BY tenant"
            )
        except FAILURES as exc:
            raise StoreUnavailable(f"postgresql queue: {exc}") from exc
        ages = {row["tenant"]: max(0.0, float(row["age"])) for row in rows}
        depth = sum(int(row["depth"]) for row in rows)
        return QueueStats(depth, max(ages.values(), default=0.0), ages)

    async def _execute(self, sql: str, *args: Any) -> None:
        try:
            await self.pool.execute(sql, *args)
        except FAILURES as exc:
            raise StoreUnavailable(f"postgresql queue: {exc}") from exc
