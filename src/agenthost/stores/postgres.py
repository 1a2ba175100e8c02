"""`postgresql://user:pass@host:port/db` (or `postgres://`): PostgreSQL as the system of record.

Conversations are kept until deleted (or, with a retention, until idle longer than it).
Each step of a turn is one call of a server-side function (`stores/migrations/`), so one
round trip on an asyncpg connection (`stores/pg_connections.py`) whose prepared statements
are cached: begin, commit, fail. Given a mark of what the caller holds (a window cache's:
`turns/window_cache.py`, or Redis's in front, `stores/cached.py`), the begin step answers
only the messages after it. Messages are append-only rows keyed by `(session_id, seq)`;
the window is read with `ORDER BY seq DESC LIMIT n` on that key, so a turn costs the same
at history 10,000 as at 10. Fencing is checked inside the commit, under the session row's lock.

Release wake-ups and interrupts travel by LISTEN/NOTIFY on one connection per process. A
step that drops a lease notifies only if a waiter asked (`release_wanted`), so a turn with
no waiter sends nothing. Every connection failure or timeout becomes `StoreUnavailable`
(503 + Retry-After); a failed connection is replaced on the next call, so service resumes
by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import msgspec

from agenthost.connections.redis_commands import Command
from agenthost.core.errors import LeaseLost, SessionExists, StoreUnavailable
from agenthost.core.settings import is_postgres_url
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
    no_commands,
)
from agenthost.stores.notify import ReleaseWaiters
from agenthost.stores.pg_batch import Batcher
from agenthost.stores.pg_connections import PgConnections
from agenthost.stores.pg_schema import SchemaTooNew, migrate_schema, schema_status

__all__ = ["FAILURES", "PostgresStore", "split_options"]

log = logging.getLogger("agenthost.stores.postgres")
T = TypeVar("T")

RELEASED = "agenthost_released"
INTERRUPTS = "agenthost_interrupts"
PURGE_BATCH = 500

# Failures that mean "PostgreSQL cannot be reached now", never "this request is wrong".
FAILURES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    # A pooled connection cut by the server mid-protocol (a shutdown) reports a state error.
    asyncpg.exceptions.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
)

_encode = msgspec.json.encode
_decode_meta = msgspec.json.Decoder(dict[str, Any]).decode
_decode_messages = msgspec.json.Decoder(list[Message]).decode
_decode_interrupt = msgspec.json.Decoder(tuple[str, str]).decode


class _Turn(msgspec.Struct):
    status: str
    message: str
    created_at: float
    updated_at: float
    response: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    held: bool = False
    fingerprint: str = ""


_decode_turn = msgspec.json.Decoder(_Turn).decode


# A turn's begin and commit, each sent alone or, under load, with the others that waited
# (stores/pg_batch.py); column 0 is the row's place in its batch (0 alone).
BEGIN_ONE = (
    "SELECT 0, kind, fence, message_count, created, created_at, metadata::text,"
    " history::text, turn::text, busy_turn_id, delta, state"
    " FROM agenthost_begin($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9, $10)"
)
BEGIN_MANY = "SELECT * FROM agenthost_begin_many($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
COMMIT_ONE = (
    "SELECT 0, turn_created_at, committed_at"
    " FROM agenthost_commit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12)"
)
COMMIT_MANY = (
    "SELECT * FROM agenthost_commit_many($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
)
_BeginArgs = tuple[str, str, str, str | None, int, int, float, str, float | None, int]
_CommitArgs = tuple[str, str, int, str, float, int, str, float, int, str, float, bytes | None]


def _columns(batch: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """A batch of argument rows as one array per argument (what unnest takes apart)."""
    return [list(column) for column in zip(*batch, strict=True)]


def _refused(exc: BaseException) -> bool:
    """PostgreSQL answered the statement with an error about it (so rolled it back), not
    with a shutdown or a lost connection."""
    return isinstance(exc, asyncpg.PostgresError) and not isinstance(exc, FAILURES)


def _in_order(rows: list[Any], size: int) -> list[Any]:
    """A batch's result rows (in session order) back in the order of its calls."""
    ordered: list[Any] = [None] * size
    for row in rows:
        ordered[row[0] - 1] = row
    return ordered


_OPTIONS = {
    "pool_size": 20,
    "command_timeout": 5.0,
    "connect_timeout": 2.0,
    "migrate": 1,
    "batch_min": 2,
    "batch_linger": 2,
}


def split_options(url: str) -> tuple[str, dict[str, float]]:
    """The DSN for asyncpg, and agenthost's own options taken out of the URL's query
    (`pool_size`, `command_timeout`, `connect_timeout`, `migrate`, `batch_min`: turn steps
    sent together at least for the batch functions to be used; 1 sends even a lone step
    through them; `batch_linger`: event-loop passes a step that finds none of its kind in
    flight waits for others to join it, 0 sends it at once)."""
    parts = urlsplit(url)
    ours: dict[str, float] = {k: float(v) for k, v in _OPTIONS.items()}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in _OPTIONS:
            try:
                ours[key] = float(value)
            except ValueError:
                raise ValueError(f"store URL option {key}={value!r} is not a number") from None
        else:
            rest.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(rest))), ours


class PostgresStore:
    """The PostgreSQL store; see the module docstring."""

    def __init__(
        self, url: str, *, read_replicas: Sequence[str] = (), purge_interval: float = 60.0
    ) -> None:
        for each in (url, *read_replicas):
            if not is_postgres_url(each):
                raise ValueError(f"not a postgresql URL: {each!r}")
        self.url = url
        self.dsn, options = split_options(url)
        self.replica_dsns = [split_options(u)[0] for u in read_replicas]
        self._replicas: list[PgConnections] = []
        self._next_replica = 0
        self.pool_size = max(1, int(options["pool_size"]))
        self.command_timeout = options["command_timeout"]
        self.connect_timeout = options["connect_timeout"]
        self.auto_migrate = bool(options["migrate"])
        self.purge_interval = purge_interval
        self._pool: PgConnections | None = None
        self._waiters = ReleaseWaiters()
        self._interrupt_callbacks: list[Callable[[str, str], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._listening = asyncio.Event()
        batch_min = max(1, int(options["batch_min"]))
        linger = max(0, int(options["batch_linger"]))
        self._begins: Batcher[_BeginArgs, Any] = Batcher(
            self._begin_one, self._begin_many, refused=_refused, min_many=batch_min, linger=linger
        )
        self._commits: Batcher[_CommitArgs, Any] = Batcher(
            self._commit_one, self._commit_many, refused=_refused, min_many=batch_min, linger=linger
        )

    @property
    def batchers(self) -> dict[str, Batcher[Any, Any]]:
        """The begin and commit steps' batchers (their `sizes` say how turns were sent)."""
        return {"begin": self._begins, "commit": self._commits}

    def _primary(self) -> PgConnections:
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("the postgresql store is not open")
        return pool

    @property
    def waiters(self) -> ReleaseWaiters:
        """The processes' turns waiting here for a session's release."""
        return self._waiters

    # -- plumbing ---------------------------------------------------------------------------

    async def _connect(self) -> asyncpg.Connection:
        conn: asyncpg.Connection = await asyncpg.connect(
            self.dsn, timeout=self.connect_timeout, command_timeout=self.command_timeout
        )
        return conn

    async def open(self) -> None:
        try:
            conn = await self._connect()
        except FAILURES as exc:
            raise StoreUnavailable(f"postgresql: {exc}") from exc
        try:
            if self.auto_migrate:
                await migrate_schema(conn)
            now = await schema_status(conn)
        finally:
            await conn.close()
        if now.too_new:
            raise SchemaTooNew(now.describe())
        if now.pending:
            raise SchemaTooNew(f"{now.describe()}: run `agenthost db migrate`")
        self._pool = await self._new_pool(self.dsn)
        self._replicas = [await self._new_pool(dsn) for dsn in self.replica_dsns]
        self._tasks = [
            asyncio.create_task(self._listen_forever(), name="postgres-listen"),
            asyncio.create_task(self._purge_forever(), name="postgres-purge"),
        ]
        # Listen before the first turn, so no interrupt sent from now on goes unheard.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.connect_timeout + 1):
                await self._listening.wait()

    async def _new_pool(self, dsn: str) -> PgConnections:
        """Connections opened when first used (so a replica that is down now does not stop
        the server from starting). Every call here is one autocommit statement that leaves
        no session state, so a connection goes back without a reset: asyncpg's pool reset
        each connection on release with a query of four statements (UNLISTEN, RESET ALL,
        ...), 10 statements per turn where 2 do the work; and its release machinery cost
        more CPU than the call (`stores/pg_connections.py`)."""
        return PgConnections(
            dsn,
            size=self.pool_size,
            connect_timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
        )

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for batcher in (self._begins, self._commits):
            await batcher.close()
        self._waiters.wake_all()
        pools = [self._pool, *self._replicas]
        self._pool, self._replicas = None, []
        for pool in pools:
            if pool is not None:
                with contextlib.suppress(*FAILURES):
                    await asyncio.wait_for(pool.close(), 5)

    async def _call(self, call: Callable[[PgConnections], Awaitable[T]]) -> T:
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("the postgresql store is not open")
        try:
            return await call(pool)
        except FAILURES as exc:
            raise StoreUnavailable(f"postgresql: {exc}") from exc

    async def _read(self, call: Callable[[PgConnections], Awaitable[T]]) -> T | None:
        """`call` on the next read replica; None if there is none or it failed (the caller
        then asks the primary)."""
        if not self._replicas:
            return None
        self._next_replica = (self._next_replica + 1) % len(self._replicas)
        try:
            return await call(self._replicas[self._next_replica])
        except FAILURES as exc:
            log.debug("read replica: %s", exc)
            return None

    async def _fetchval(self, query: str, *args: Any) -> Any:
        return await self._call(lambda pool: pool.fetchval(query, *args))

    async def ping(self) -> None:
        await self._fetchval("SELECT 1")

    async def _listen_forever(self) -> None:
        """One connection LISTENs for releases and interrupts; rebuilt after any failure."""
        delay = 0.1
        while True:
            try:
                conn = await self._connect()
            except FAILURES as exc:
                log.debug("postgres listener: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            delay = 0.1
            await self._listen_on(conn)

    async def _listen_on(self, conn: asyncpg.Connection) -> None:
        """Deliver notifications until `conn` is lost; then wake every waiter, since a
        release may go unheard until the next connection listens."""
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(RELEASED, self._on_released)
            await conn.add_listener(INTERRUPTS, self._on_interrupt)
            self._listening.set()
            while not lost.is_set() and not conn.is_closed():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await lost.wait()
                if not lost.is_set():
                    await conn.fetchval("SELECT 1")  # notices a silently dead socket
        except FAILURES as exc:
            log.debug("postgres listener lost: %s", exc)
        finally:
            self._listening.clear()
            conn.terminate()
            self._waiters.wake_all()

    def _on_released(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._waiters.wake(payload)

    def _on_interrupt(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            session_id, turn_id = _decode_interrupt(payload)
        except msgspec.DecodeError:
            return
        for callback in self._interrupt_callbacks:
            callback(session_id, turn_id)

    async def _purge_forever(self) -> None:
        while True:
            await asyncio.sleep(self.purge_interval)
            with contextlib.suppress(StoreUnavailable):
                await self.purge_expired()

    # -- sessions ---------------------------------------------------------------------------

    async def create_session(
        self, session_id: str, metadata: dict[str, Any], ttl_s: float
    ) -> SessionInfo:
        meta = _encode(metadata).decode()
        created_at = await self._fetchval(
            "SELECT agenthost_create_session($1, $2::jsonb, $3)", session_id, meta, float(ttl_s)
        )
        if created_at is None:
            raise SessionExists(f"session {session_id} exists")
        return SessionInfo(session_id, created_at, created_at, 0, _decode_meta(meta))

    async def get_session(
        self, session_id: str, *, min_seq: int | None = None
    ) -> SessionInfo | None:
        def query(pool: PgConnections) -> Any:
            return pool.fetchrow(
                "SELECT created_at, updated_at, turns, metadata::text, message_count"
                " FROM agenthost_sessions"
                " WHERE session_id = $1 AND expires_at > agenthost_now()",
                session_id,
            )

        row = await self._read(query)
        # A replica that does not know the session yet, or is behind what the caller has
        # seen, is not the last word: the primary is.
        if row is None or (min_seq is not None and row[4] <= min_seq):
            row = await self._call(query)
        if row is None:
            return None
        return SessionInfo(session_id, row[0], row[1], row[2], _decode_meta(row[3]))

    async def delete_session(self, session_id: str) -> bool:
        deleted: bool = await self._fetchval("SELECT agenthost_delete_session($1)", session_id)
        if deleted:
            self._waiters.wake(session_id)
        return deleted

    async def list_messages(
        self,
        session_id: str,
        limit: int,
        before: int | None = None,
        *,
        min_seq: int | None = None,
    ) -> list[Message] | None:
        upper = 2**31 - 1 if before is None else min(before, 2**31 - 1)

        def query(pool: PgConnections) -> Any:
            return pool.fetchval(
                "SELECT agenthost_page($1, $2, $3)::text", session_id, limit, upper
            )

        page = await self._read(query)
        if page is not None:
            messages = _decode_messages(page)
            needed = min_seq if min_seq is None or before is None else min(min_seq, before - 1)
            if needed is None or (messages and messages[-1].seq >= needed):
                return messages
        page = await self._call(query)
        return None if page is None else _decode_messages(page)

    # -- turns ------------------------------------------------------------------------------

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
        patch = _encode(metadata_patch).decode() if metadata_patch else None
        args: _BeginArgs = (
            session_id,
            turn_id,
            message,
            patch,
            lease_ms,
            window,
            float(ttl_s),
            fingerprint,
            None if known is None else known.created_at,
            0 if known is None else known.count,
        )
        row = await self._call(lambda _pool: self._begins.submit(args))
        kind = row[1]
        if kind == "reused":
            raise key_reused(turn_id)
        if kind == "completed":
            return Completed(_record(session_id, turn_id, row[8]))
        if kind == "busy":
            return Busy(row[9])
        return Started(
            Lease(session_id, turn_id, row[2], fingerprint),
            _decode_messages(row[7]),
            _decode_meta(row[6]),
            row[3],
            row[4],
            row[5],
            row[10],
            row[11],
        )

    async def _begin_one(self, args: _BeginArgs) -> Any:
        return await self._primary().fetchrow(BEGIN_ONE, *args)

    async def _begin_many(self, batch: Sequence[_BeginArgs]) -> list[Any]:
        return _in_order(await self._primary().fetch(BEGIN_MANY, *_columns(batch)), len(batch))

    async def session_created(self, session_id: str) -> float | None:
        """The live session's created_at (its incarnation), or None: a read on the
        primary, no lock."""
        created: float | None = await self._fetchval(
            "SELECT agenthost_session_created($1)", session_id
        )
        return created

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
        sid, tid = lease.session_id, lease.turn_id
        args: _CommitArgs = (
            sid,
            tid,
            lease.fence,
            user.content,
            user.created_at,
            user.seq,
            assistant.content,
            assistant.created_at,
            assistant.seq,
            _encode(metadata).decode(),
            float(ttl_s),
            state,
        )
        row = await self._call(lambda _pool: self._commits.submit(args))
        if row[2] is None:
            raise LeaseLost(f"turn {tid} no longer holds session {sid}")
        self._waiters.wake(sid)
        return TurnRecord(
            tid,
            sid,
            "completed",
            user.content,
            row[1],
            row[2],
            assistant.content,
            fingerprint=lease.fingerprint,
        )

    async def _commit_one(self, args: _CommitArgs) -> Any:
        return await self._primary().fetchrow(COMMIT_ONE, *args)

    async def _commit_many(self, batch: Sequence[_CommitArgs]) -> list[Any]:
        return _in_order(await self._primary().fetch(COMMIT_MANY, *_columns(batch)), len(batch))

    async def fail_turn(self, lease: Lease, error: TurnError, ttl_s: float) -> TurnRecord | None:
        sid, tid = lease.session_id, lease.turn_id
        turn = await self._fetchval(
            "SELECT agenthost_fail_turn($1, $2, $3, $4, $5, $6)::text",
            sid,
            tid,
            lease.fence,
            error.code,
            error.message,
            float(ttl_s),
        )
        if turn is None:
            return None
        self._waiters.wake(sid)
        return _record(sid, tid, turn)

    async def renew_lease(self, lease: Lease, lease_ms: int) -> bool:
        status = await self._call(
            lambda pool: pool.execute(
                "UPDATE agenthost_sessions SET lease_expires_at = agenthost_now() + $4 / 1000.0"
                " WHERE session_id = $1 AND lease_turn_id = $2 AND lease_fence = $3"
                " AND lease_expires_at > agenthost_now() AND expires_at > agenthost_now()",
                lease.session_id,
                lease.turn_id,
                lease.fence,
                lease_ms,
            )
        )
        return bool(status == "UPDATE 1")

    async def release_lease(self, lease: Lease) -> bool:
        released: bool = await self._fetchval(
            "SELECT agenthost_release_lease($1, $2, $3)",
            lease.session_id,
            lease.turn_id,
            lease.fence,
        )
        if released:
            self._waiters.wake(lease.session_id)
        return released

    async def running_turn(self, session_id: str) -> str | None:
        holder: str | None = await self._fetchval(
            "SELECT lease_turn_id FROM agenthost_sessions WHERE session_id = $1"
            " AND expires_at > agenthost_now() AND lease_expires_at > agenthost_now()",
            session_id,
        )
        return holder

    async def unfinished_turn(self, session_id: str) -> str | None:
        newest: str | None = await self._fetchval(
            "SELECT CASE WHEN t.status = 'running' THEN t.turn_id END FROM agenthost_turns t"
            " JOIN agenthost_sessions s USING (session_id) WHERE t.session_id = $1"
            " AND s.expires_at > agenthost_now() ORDER BY t.created_at DESC LIMIT 1",
            session_id,
        )
        return newest

    async def get_turn(self, session_id: str, turn_id: str) -> TurnRecord | None:
        turn = await self._fetchval("SELECT agenthost_get_turn($1, $2)::text", session_id, turn_id)
        if turn is None:
            return None
        return _record(session_id, turn_id, turn)

    async def wait_for_release(self, session_id: str, timeout: float) -> None:
        event, _ = self._waiters.register(session_id)
        try:
            # Asking after registering: a release from now on wakes us; one before, we see.
            held = await self._fetchval("SELECT agenthost_want_release($1)", session_id)
            if held and self._listening.is_set():
                await _wait(event, timeout)
            elif held:  # no listener right now: poll the lease instead, until it is back
                await _wait(event, min(timeout, 0.2))
        finally:
            self._waiters.unregister(session_id, event)

    async def request_interrupt(self, session_id: str, turn_id: str) -> None:
        payload = _encode((session_id, turn_id)).decode()
        await self._fetchval("SELECT pg_notify($1, $2)", INTERRUPTS, payload)

    def on_interrupt(self, callback: Callable[[str, str], None]) -> None:
        self._interrupt_callbacks.append(callback)

    async def purge_expired(self) -> int:
        total = 0
        while True:
            removed: int = await self._fetchval("SELECT agenthost_purge($1)", PURGE_BATCH)
            total += removed
            if removed < PURGE_BATCH:
                return total


async def _wait(event: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()


def _record(session_id: str, turn_id: str, text: str) -> TurnRecord:
    t = _decode_turn(text)
    status: Any = t.status
    if status == "running" and not t.held:
        status = "pending"
    error = None if t.error_code is None else TurnError(t.error_code, t.error_message or "")
    return TurnRecord(
        turn_id,
        session_id,
        status,
        t.message,
        t.created_at,
        t.updated_at,
        t.response,
        error,
        fingerprint=t.fingerprint,
    )
