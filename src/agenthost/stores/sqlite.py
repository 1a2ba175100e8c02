"""`sqlite:///path.db`: the embedded default store — one file, WAL, no service to run.

Each store operation is one synchronous function run on a single dedicated thread that owns
the connection (aiosqlite would hop threads once per statement). Operations that queue up
while the thread is busy run together in one transaction, each inside its own savepoint,
and are answered with one wake-up of the event loop: group commit, so the cost of a commit
and of a thread hop is shared by every turn in the batch. The history window is read with
`ORDER BY seq DESC LIMIT n` on the (session_id, seq) index, never the whole history. One
process per file: release notifications are in-process. The schema and its migrations are in
`sqlite_schema.py`.

The connection's page cache is allowed to grow to `_CACHE_KIB` (SQLite's default is 2 MiB).
With 1 KB messages a few hundred sessions outgrow 2 MiB, and then every turn read back from
the file, with a system call each, the pages its own writes had just evicted: measured at
history 200 (200 sessions, ~90 MB of rows), 46 reads per turn fell to 13, and at history 5
26 to 8, so a turn's cost grew less with the size of the database (issue 21: a turn at
history 200 within 1.3x of one at history 5). The cache is filled only as pages are read.

The WAL is checkpointed into the file every `_CHECKPOINT_PAGES` pages written (SQLite's
default is 1,000, 4 MB). A checkpoint copies every page the WAL holds once, however often it
was rewritten since the last one; the pages a turn rewrites are few but, at a long history,
its session's own (its leaves of the message and turn indexes), so the longer the WAL runs,
the more rewrites of each one a checkpoint folds into one copy. Measured with 1 KB messages
at history 200 (200 sessions, 32 concurrent turns): 37 KB written and 4.0 read calls per
turn at 1,000 pages, 21-33 KB and 1.5-2.6 at 10,000 (at history 5: 22 KB and 2.0, against
21-22 KB and 1.5-1.8; the store alone, in one process). The WAL file then stays at up to
~40 MB beside the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from agenthost.connections.redis_commands import Command
from agenthost.core.errors import LeaseLost, SessionExists, StoreUnavailable
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
from agenthost.stores.sqlite_schema import migrate

__all__ = ["SQLiteStore"]

T = TypeVar("T")

_COLUMNS = (
    "SELECT created_at, updated_at, turns, message_count, fence, metadata, lease_turn_id,"
    " lease_fence, lease_expires_at"
)
_WHERE_LIVE = " FROM sessions WHERE session_id = ? AND expires_at > ?"
_SESSION = _COLUMNS + _WHERE_LIVE
# begin_turn's read also hands out the agent state; other reads leave the blob alone.
_SESSION_STATE = _COLUMNS + ", state" + _WHERE_LIVE
_NEWEST_TURN = (
    "SELECT turn_id, status FROM turns WHERE session_id = ? ORDER BY created_at DESC LIMIT 1"
)
_TURN = (
    "SELECT status, message, response, error_code, error_message, created_at, updated_at,"
    " fingerprint FROM turns WHERE session_id = ? AND turn_id = ?"
)
_WINDOW = (
    "SELECT role, content, turn_id, created_at, seq FROM messages"
    " WHERE session_id = ? AND seq < ? AND seq >= ? ORDER BY seq DESC LIMIT ?"
)
_HELD = (
    "SELECT message_count FROM sessions WHERE session_id = ? AND expires_at > ?"
    " AND lease_turn_id = ? AND lease_fence = ? AND lease_expires_at > ?"
)
_DROP_LEASE = "UPDATE sessions SET lease_turn_id = NULL, lease_expires_at = 0 WHERE session_id = ?"

_CACHE_KIB = 64 * 1024  # the page cache's bound; see the module docstring
_CHECKPOINT_PAGES = 10_000  # WAL pages between checkpoints; see the module docstring

_encode = msgspec.json.encode
_decode_meta = msgspec.json.Decoder(dict[str, Any]).decode
_INTERVAL = 60.0


def _path_of(url: str) -> str:
    """`sqlite:///rel.db` → `rel.db`; `sqlite:////abs.db` → `/abs.db`; `:memory:` kept."""
    if not url.startswith("sqlite://"):
        raise ValueError(f"not a sqlite URL: {url!r}")
    path = url[len("sqlite://") :]
    if path.startswith("/"):
        path = path[1:]
    if not path:
        raise ValueError("sqlite URL needs a path: sqlite:///path/to/agenthost.db")
    return path


class SQLiteStore:
    """The embedded store; see the module docstring for its threading model."""

    def __init__(self, url: str, *, purge_interval: float = _INTERVAL) -> None:
        self.url = url
        self.path = _path_of(url)
        self.purge_interval = purge_interval
        self._worker: _Worker | None = None
        self._waiters = ReleaseWaiters()
        self._interrupt_callbacks: list[Callable[[str, str], None]] = []
        self._purger: asyncio.Task[None] | None = None

    # -- plumbing ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")  # negative: KiB, not pages
        conn.execute(f"PRAGMA wal_autocheckpoint={_CHECKPOINT_PAGES}")
        try:
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the store's thread, in a transaction shared with whatever else is
        queued; its own changes are rolled back if it raises."""
        worker = self._worker
        if worker is None:
            raise StoreUnavailable("the sqlite store is not open")
        try:
            return await worker.submit(fn)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from exc

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn` on the store's connection, in a transaction (as `_run`): for the process
        registry, whose tables are in the same file (see `registry/sqlite.py`)."""
        return await self._run(fn)

    async def open(self) -> None:
        worker = _Worker(self._connect)
        try:
            await worker.start_and_connect()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc
        self._worker = worker
        self._purger = asyncio.create_task(self._purge_forever(), name="sqlite-purge")

    async def close(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
            self._purger = None
        self._waiters.wake_all()
        worker, self._worker = self._worker, None
        if worker is not None:
            await worker.stop()

    async def _purge_forever(self) -> None:
        while True:
            await asyncio.sleep(self.purge_interval)
            with contextlib.suppress(StoreUnavailable):
                await self.purge_expired()

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    # -- sessions ---------------------------------------------------------------------------

    async def create_session(
        self, session_id: str, metadata: dict[str, Any], ttl_s: float
    ) -> SessionInfo:
        meta = _encode(metadata)

        def create(conn: sqlite3.Connection) -> SessionInfo | None:
            now = time.time()
            if conn.execute(_SESSION, (session_id, now)).fetchone() is not None:
                return None
            _delete(conn, session_id)  # an expired one is replaced
            conn.execute(
                "INSERT INTO sessions (session_id, created_at, updated_at, expires_at, metadata)"
                " VALUES (?, ?, ?, ?, ?)",
                (session_id, now, now, now + ttl_s, meta),
            )
            return SessionInfo(session_id, now, now, 0, _decode_meta(meta))

        info = await self._run(create)
        if info is None:
            raise SessionExists("this session exists")
        return info

    async def get_session(
        self, session_id: str, *, min_seq: int | None = None
    ) -> SessionInfo | None:
        def get(conn: sqlite3.Connection) -> SessionInfo | None:
            row = conn.execute(_SESSION, (session_id, time.time())).fetchone()
            if row is None:
                return None
            return SessionInfo(session_id, row[0], row[1], row[2], _decode_meta(row[5]))

        return await self._run(get)

    async def delete_session(self, session_id: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            live = conn.execute(_SESSION, (session_id, time.time())).fetchone() is not None
            _delete(conn, session_id)
            return live

        deleted = await self._run(delete)
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
        upper = 2**62 if before is None else before

        def page(conn: sqlite3.Connection) -> list[Message] | None:
            if conn.execute(_SESSION, (session_id, time.time())).fetchone() is None:
                return None
            rows = conn.execute(_WINDOW, (session_id, upper, 0, limit)).fetchall()
            return [Message(*row) for row in reversed(rows)]

        return await self._run(page)

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
        def begin(conn: sqlite3.Connection) -> Started | Completed | Busy:
            now = time.time()
            row = conn.execute(_SESSION_STATE, (session_id, now)).fetchone()
            created = row is None
            created_at = now
            if row is None:
                _delete(conn, session_id)
                conn.execute(
                    "INSERT INTO sessions (session_id, created_at, updated_at, expires_at,"
                    " metadata) VALUES (?, ?, ?, ?, ?)",
                    (session_id, now, now, now + ttl_s, b"{}"),
                )
                count, fence, meta, state = 0, 0, b"{}", None
            else:
                turn = conn.execute(_TURN, (session_id, turn_id)).fetchone()
                if turn is not None and fingerprint and turn[7] not in ("", fingerprint):
                    raise key_reused(turn_id)
                if turn is not None and turn[0] == "completed":
                    return Completed(_record(session_id, turn_id, turn))
                if row[6] is not None and row[8] > now:
                    return Busy(row[6])
                count, fence, meta = row[3], row[4], row[5]
                created_at, state = row[0], row[9]
            fence += 1
            conn.execute(
                "UPDATE sessions SET fence = ?, lease_turn_id = ?, lease_fence = ?,"
                " lease_expires_at = ?, expires_at = ? WHERE session_id = ?",
                (fence, turn_id, fence, now + lease_ms / 1000, now + ttl_s, session_id),
            )
            conn.execute(
                "INSERT OR REPLACE INTO turns (session_id, turn_id, status, message,"
                " created_at, updated_at, fingerprint) VALUES (?, ?, 'running', ?, ?, ?, ?)",
                (session_id, turn_id, message, now, now, fingerprint),
            )
            history: list[Message] = []
            delta = known_holds(known, created_at, count)
            since = known.count if delta and known is not None else 0
            if window > 0 and count > since:
                rows = conn.execute(_WINDOW, (session_id, count, since, window)).fetchall()
                history = [Message(*r) for r in reversed(rows)]
            metadata = _decode_meta(meta)
            if metadata_patch:
                metadata.update(metadata_patch)
            lease = Lease(session_id, turn_id, fence, fingerprint)
            return Started(lease, history, metadata, count, created, created_at, delta, state)

        return await self._run(begin)

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
        meta = _encode(metadata)
        sid, tid = lease.session_id, lease.turn_id

        def commit(conn: sqlite3.Connection) -> TurnRecord | None:
            now = time.time()
            held = conn.execute(_HELD, (sid, now, tid, lease.fence, now)).fetchone()
            if held is None:
                return None
            conn.executemany(
                "INSERT INTO messages (session_id, seq, role, content, turn_id, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (sid, m.seq, m.role, m.content, m.turn_id, m.created_at)
                    for m in (user, assistant)
                ],
            )
            conn.execute(
                "UPDATE sessions SET turns = turns + 1, message_count = ?, metadata = ?,"
                " updated_at = ?, expires_at = ?, lease_turn_id = NULL, lease_expires_at = 0"
                " WHERE session_id = ?",
                (assistant.seq + 1, meta, now, now + ttl_s, sid),
            )
            if state is not None:
                conn.execute("UPDATE sessions SET state = ? WHERE session_id = ?", (state, sid))
            conn.execute(
                "UPDATE turns SET status = 'completed', response = ?, error_code = NULL,"
                " error_message = NULL, updated_at = ? WHERE session_id = ? AND turn_id = ?",
                (assistant.content, now, sid, tid),
            )
            return _record(sid, tid, conn.execute(_TURN, (sid, tid)).fetchone())

        record = await self._run(commit)
        if record is None:
            raise LeaseLost(f"turn {tid} no longer holds its session's lease")
        self._waiters.wake(sid)
        return record

    async def fail_turn(self, lease: Lease, error: TurnError, ttl_s: float) -> TurnRecord | None:
        sid, tid = lease.session_id, lease.turn_id

        def fail(conn: sqlite3.Connection) -> TurnRecord | None:
            now = time.time()
            if conn.execute(_HELD, (sid, now, tid, lease.fence, now)).fetchone() is None:
                return None
            conn.execute(
                "UPDATE turns SET status = 'failed', error_code = ?, error_message = ?,"
                " updated_at = ? WHERE session_id = ? AND turn_id = ?",
                (error.code, error.message, now, sid, tid),
            )
            conn.execute(
                "UPDATE sessions SET lease_turn_id = NULL, lease_expires_at = 0, expires_at = ?"
                " WHERE session_id = ?",
                (now + ttl_s, sid),
            )
            return _record(sid, tid, conn.execute(_TURN, (sid, tid)).fetchone())

        record = await self._run(fail)
        if record is not None:
            self._waiters.wake(sid)
        return record

    async def renew_lease(self, lease: Lease, lease_ms: int) -> bool:
        def renew(conn: sqlite3.Connection) -> bool:
            now = time.time()
            cur = conn.execute(
                "UPDATE sessions SET lease_expires_at = ? WHERE session_id = ? AND"
                " expires_at > ? AND lease_turn_id = ? AND lease_fence = ? AND"
                " lease_expires_at > ?",
                (now + lease_ms / 1000, lease.session_id, now, lease.turn_id, lease.fence, now),
            )
            return cur.rowcount == 1

        return await self._run(renew)

    async def release_lease(self, lease: Lease) -> bool:
        def release(conn: sqlite3.Connection) -> bool:
            now = time.time()
            held = conn.execute(
                _HELD, (lease.session_id, now, lease.turn_id, lease.fence, now)
            ).fetchone()
            if held is None:
                return False
            conn.execute(_DROP_LEASE, (lease.session_id,))
            return True

        released = await self._run(release)
        if released:
            self._waiters.wake(lease.session_id)
        return released

    async def running_turn(self, session_id: str) -> str | None:
        def get(conn: sqlite3.Connection) -> str | None:
            now = time.time()
            row = conn.execute(_SESSION, (session_id, now)).fetchone()
            if row is None or row[6] is None or row[8] <= now:
                return None
            holder: str = row[6]
            return holder

        return await self._run(get)

    async def unfinished_turn(self, session_id: str) -> str | None:
        def get(conn: sqlite3.Connection) -> str | None:
            if conn.execute(_SESSION, (session_id, time.time())).fetchone() is None:
                return None
            row = conn.execute(_NEWEST_TURN, (session_id,)).fetchone()
            return None if row is None or row[1] != "running" else str(row[0])

        return await self._run(get)

    async def get_turn(self, session_id: str, turn_id: str) -> TurnRecord | None:
        def get(conn: sqlite3.Connection) -> TurnRecord | None:
            now = time.time()
            row = conn.execute(_SESSION, (session_id, now)).fetchone()
            if row is None:
                return None
            turn = conn.execute(_TURN, (session_id, turn_id)).fetchone()
            if turn is None:
                return None
            record = _record(session_id, turn_id, turn)
            if record.status == "running" and not (row[6] == turn_id and row[8] > now):
                record.status = "pending"
            return record

        return await self._run(get)

    async def wait_for_release(self, session_id: str, timeout: float) -> None:
        await self._waiters.wait(session_id, timeout)

    async def request_interrupt(self, session_id: str, turn_id: str) -> None:
        for callback in self._interrupt_callbacks:
            callback(session_id, turn_id)

    def on_interrupt(self, callback: Callable[[str, str], None]) -> None:
        self._interrupt_callbacks.append(callback)

    async def purge_expired(self) -> int:
        def purge(conn: sqlite3.Connection) -> int:
            now = time.time()
            expired = [
                r[0]
                for r in conn.execute(
                    "SELECT session_id FROM sessions WHERE expires_at <= ?", (now,)
                )
            ]
            for sid in expired:
                _delete(conn, sid)
            return len(expired)

        return await self._run(purge)


class _Worker:
    """The thread that owns the connection and runs queued operations in group commits."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="sqlite-store", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Future[None] | None = None

    async def start_and_connect(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ready = self._loop.create_future()
        self._thread.start()
        await self._ready

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        assert self._loop is not None
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put((fn, future))
        return future

    async def stop(self) -> None:
        self._queue.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    def _serve(self) -> None:
        loop, ready = self._loop, self._ready
        assert loop is not None and ready is not None
        try:
            conn = self._connect()
        except BaseException as exc:
            loop.call_soon_threadsafe(_settle, ready, None, exc)
            return
        loop.call_soon_threadsafe(_settle, ready, None, None)
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                stopping = False
                while True:
                    try:
                        job = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        stopping = True
                        break
                    batch.append(job)
                loop.call_soon_threadsafe(_settle_all, self._transaction(conn, batch))
                if stopping:
                    return
        finally:
            conn.close()

    @staticmethod
    def _transaction(conn: sqlite3.Connection, batch: list[_Job]) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, future in batch:
                conn.execute("SAVEPOINT op")
                try:
                    result = fn(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    outcomes.append((future, None, exc))
                else:
                    outcomes.append((future, result, None))
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            # The transaction failed as a whole (disk full, I/O error): nothing was kept.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            return [(future, None, exc) for _, future in batch]
        return outcomes


_Job = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]"]
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _settle_all(outcomes: list[_Outcome]) -> None:
    for future, result, error in outcomes:
        _settle(future, result, error)


def _delete(conn: sqlite3.Connection, session_id: str) -> None:
    for table in ("messages", "turns", "sessions"):
        conn.execute(f"DELETE FROM {table} WHERE session_id = ?", (session_id,))


def _record(session_id: str, turn_id: str, row: tuple[Any, ...]) -> TurnRecord:
    status, message, response, error_code, error_message, created_at, updated_at, fp = row
    error = None if error_code is None else TurnError(error_code, error_message or "")
    return TurnRecord(
        turn_id, session_id, status, message, created_at, updated_at, response, error, fp
    )
