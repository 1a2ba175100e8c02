"""What the SQLite store promises beyond the shared contract: a database made by an older
release (sessions without the agent state column) opens, keeps its sessions, and gains it;
a database larger than SQLite's default page cache is not read back from the file every turn."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from agenthost.stores import Message, Started
from agenthost.stores.sqlite import SQLiteStore

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
        turn_id = f"t{done}"
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
