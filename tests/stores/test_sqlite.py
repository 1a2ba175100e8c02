"""What the SQLite store promises beyond the shared contract: a database made by an older
release (sessions without the agent state column; messages and turns in WITHOUT ROWID tables)
opens, is migrated and keeps its sessions; one of a newer schema is refused; a database larger
than SQLite's default page cache is not read back from the file every turn; the WAL runs
well past SQLite's default 1,000 pages before a checkpoint; a 1 KB message takes no
overflow page."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from agenthost.core.errors import StoreUnavailable
from agenthost.stores import Completed, Message, Started
from agenthost.stores.pg_schema import SchemaTooNew
from agenthost.stores.sqlite import SQLiteStore
from agenthost.stores.sqlite_schema import SCHEMA_VERSION

OLD_SESSIONS = """
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    turns INTEGER NOT NULL DEFAULT 0,
    message_count INTEGER NOT NULL DEFAULT 0,
    fence INTEGER NOT NULL DEFAULT 0,
    metadata BLOB NOT NULL,
    lease_turn_id TEXT,
    lease_fence INTEGER NOT NULL DEFAULT 0,
    lease_expires_at REAL NOT NULL DEFAULT 0
) WITHOUT ROWID;
"""


async def test_a_database_without_the_state_column_gains_it_and_keeps_its_sessions(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SESSIONS)
    now = time.time()
    conn.execute(
        "INSERT INTO sessions (session_id, created_at, updated_at, expires_at, metadata)"
        " VALUES ('old', ?, ?, ?, '{\"kept\": true}')",
        (now, now, now + 3600),
    )
    conn.commit()
    conn.close()

    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    try:
        started = await store.begin_turn(
            "old", "t1", "hi", metadata_patch=None, lease_ms=10_000, window=10, ttl_s=3600
        )
        assert isinstance(started, Started) and started.state is None
        assert started.metadata == {"kept": True}
        await store.commit_turn(
            started.lease,
            user=Message("user", "hi", "t1", time.time(), 0),
            assistant=Message("assistant", "yo", "t1", time.time(), 1),
            metadata=started.metadata,
            ttl_s=3600,
            state=b"graph",
        )
        again = await store.begin_turn(
            "old", "t2", "hi", metadata_patch=None, lease_ms=10_000, window=10, ttl_s=3600
        )
        assert isinstance(again, Started) and again.state == b"graph"
    finally:
        await store.close()


async def _one_turn(store: SQLiteStore, session_id: str, turn_id: str, text: str) -> None:
    """Begin and commit a turn whose message and answer are both `text`."""
    started = await store.begin_turn(
        session_id, turn_id, text, metadata_patch=None, lease_ms=10_000, window=0, ttl_s=60
    )
    assert isinstance(started, Started)
    count = started.message_count
    await store.commit_turn(
        started.lease,
        user=Message("user", text, turn_id, 0.0, count),
        assistant=Message("assistant", text, turn_id, 0.0, count + 1),
        metadata={},
        ttl_s=60,
    )


def _read_calls() -> int:
    """Read system calls this process has made (Linux's /proc/self/io)."""
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("syscr")).split()[1])


async def test_turns_on_a_database_past_sqlites_default_cache_do_not_read_their_pages_back(
    tmp_path: Path,
) -> None:
    """A database of 1 KB messages larger than SQLite's default 2 MiB page cache: each turn
    used to read back from the file (about 40 read calls a turn here) the pages its own
    writes had evicted; with the store's larger cache only the WAL checkpoints read (about 9)."""
    store = SQLiteStore(f"sqlite:///{tmp_path / 'big.db'}")
    await store.open()
    text = "x" * 1024
    done = 0

    async def turn(session_id: str) -> None:
        nonlocal done
        done += 1
        await _one_turn(store, session_id, f"t{done}", text)

    try:
        for _ in range(10):  # 1,000 turns: about 20 MB of rows
            await asyncio.gather(*(turn(f"s{i}") for i in range(100)))
        before = _read_calls()
        for _ in range(5):
            await asyncio.gather(*(turn(f"s{i}") for i in range(100)))
        reads_per_turn = (_read_calls() - before) / 500
    finally:
        await store.close()
    assert reads_per_turn < 20


async def test_the_wal_runs_past_sqlites_default_checkpoint_of_1000_pages(
    tmp_path: Path,
) -> None:
    """A checkpoint copies each page the WAL holds once: the longer the WAL runs, the more
    rewrites of a session's pages it folds into one copy. At SQLite's default the WAL was
    checkpointed, and started again from its beginning, every 1,000 pages."""
    path = tmp_path / "wal.db"
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    text = "x" * 1024
    try:
        for round_ in range(10):  # 1,000 turns, 4 KB of rows each: 1,000 pages and more
            for i in range(100):
                await _one_turn(store, f"s{i}", f"t{round_}-{i}", text)
        wal_pages = (path.with_name("wal.db-wal").stat().st_size - 32) // (4096 + 24)
    finally:
        await store.close()
    assert wal_pages > 2000


# The schema of releases before versions were kept (`PRAGMA user_version` 0): messages and
# turns in WITHOUT ROWID tables keyed by their session.
OLD_TABLES = """
CREATE TABLE messages (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    turn_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
CREATE TABLE turns (
    session_id TEXT NOT NULL,
    turn_id TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    response TEXT,
    error_code TEXT,
    error_message TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (session_id, turn_id)
) WITHOUT ROWID;
"""


def _old_database(path: Path, turns: int) -> None:
    """A file as an older release left it: session `old` with `turns` completed turns."""
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SESSIONS + OLD_TABLES)
    now = time.time()
    conn.execute(
        "INSERT INTO sessions (session_id, created_at, updated_at, expires_at, turns,"
        " message_count, metadata) VALUES ('old', ?, ?, ?, ?, ?, '{}')",
        (now, now, now + 3600, turns, 2 * turns),
    )
    for i in range(turns):
        conn.execute(
            "INSERT INTO turns VALUES ('old', ?, 'completed', ?, ?, NULL, NULL, ?, ?)",
            (f"t{i}", f"q{i}", f"a{i}", now + i, now + i),
        )
        conn.executemany(
            "INSERT INTO messages VALUES ('old', ?, ?, ?, ?, ?)",
            [
                (2 * i, "user", f"q{i}", f"t{i}", now + i),
                (2 * i + 1, "assistant", f"a{i}", f"t{i}", now + i),
            ],
        )
    conn.commit()
    conn.close()


def _layout(path: Path) -> tuple[int, dict[str, str]]:
    conn = sqlite3.connect(path)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = dict(conn.execute("SELECT name, sql FROM sqlite_schema WHERE type = 'table'"))
        return version, tables
    finally:
        conn.close()


async def test_a_database_of_the_unversioned_schema_is_migrated_and_keeps_its_history(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    _old_database(path, turns=30)

    for _ in range(2):  # the second open finds the file migrated and leaves it alone
        store = SQLiteStore(f"sqlite:///{path}")
        await store.open()
        try:
            page = await store.list_messages("old", 4)
            assert page is not None
            assert [(m.seq, m.content) for m in page] == [
                (56, "q28"), (57, "a28"), (58, "q29"), (59, "a29"),
            ]  # fmt: skip
            # A completed turn still answers a retry, with no agent call.
            again = await store.begin_turn(
                "old", "t7", "q7", metadata_patch=None, lease_ms=10_000, window=4, ttl_s=3600
            )
            assert isinstance(again, Completed) and again.record.response == "a7"
        finally:
            await store.close()
        version, tables = _layout(path)
        assert version == SCHEMA_VERSION
        assert "WITHOUT ROWID" not in tables["messages"]
        assert "WITHOUT ROWID" not in tables["turns"]
        assert "messages_v2" not in tables and "turns_v2" not in tables

    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    try:
        started = await store.begin_turn(
            "old", "t30", "q30", metadata_patch=None, lease_ms=10_000, window=3, ttl_s=3600
        )
        assert isinstance(started, Started) and started.message_count == 60
        assert [m.content for m in started.history] == ["a28", "q29", "a29"]
        await store.commit_turn(
            started.lease,
            user=Message("user", "q30", "t30", time.time(), 60),
            assistant=Message("assistant", "a30", "t30", time.time(), 61),
            metadata={},
            ttl_s=3600,
        )
        page = await store.list_messages("old", 2)
        assert page is not None and [m.content for m in page] == ["q30", "a30"]
        # (session_id, seq) is still a key: a second message 61 is refused.
        with pytest.raises(StoreUnavailable):
            await store._run(
                lambda conn: conn.execute(
                    "INSERT INTO messages (session_id, seq, role, content, turn_id, created_at)"
                    " VALUES ('old', 61, 'user', 'x', 't', 0)"
                )
            )
    finally:
        await store.close()


async def test_a_database_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    store = SQLiteStore(f"sqlite:///{path}")
    with pytest.raises(SchemaTooNew, match="upgrade agenthost"):
        await store.open()


async def test_a_1kb_message_takes_about_its_size_in_the_file_not_an_overflow_page(
    tmp_path: Path,
) -> None:
    """In the WITHOUT ROWID tables of schema 0, a row past ~1,000 bytes kept all but ~490
    bytes on an overflow page of its own, and every seek read the overflow page of each row
    it compared with: about 8 KB of file per 1 KB message (a message row and half a turn
    row), and at history 200 a turn cost 1.5-1.8x a turn at history 5."""
    path = tmp_path / "sizes.db"
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    text = "x" * 1024
    try:
        for i in range(30):
            for s in range(20):
                started = await store.begin_turn(
                    f"s{s}", f"t{i}", text, metadata_patch=None, lease_ms=10_000, window=0,
                    ttl_s=60,
                )  # fmt: skip
                assert isinstance(started, Started)
                await store.commit_turn(
                    started.lease,
                    user=Message("user", text, f"t{i}", 0.0, 2 * i),
                    assistant=Message("assistant", text, f"t{i}", 0.0, 2 * i + 1),
                    metadata={},
                    ttl_s=60,
                )
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        overflow = conn.execute(
            "SELECT count(*) FROM dbstat WHERE name IN ('messages', 'turns')"
            " AND pagetype = 'overflow'"
        ).fetchone()[0]
        pages = conn.execute(
            "SELECT count(*) FROM dbstat WHERE name IN ('messages', 'turns')"
        ).fetchone()[0]
    finally:
        conn.close()
    assert overflow == 0
    assert pages * 4096 / 1200 < 4096  # 1,200 messages of 1 KB: under 4 KB of file each
