"""What the SQLite store promises beyond the shared contract: a database made by an older
release (sessions without the agent state column) opens, keeps its sessions, and gains it."""

from __future__ import annotations

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
