"""The SQLite store's schema and its migrations, numbered in the file's `PRAGMA user_version`.

A new file gets the current schema at once; an existing one is brought up to it step by
step, in one transaction, so a file made by any earlier release opens and keeps its
sessions. A file of a newer schema than this build knows is refused (`SchemaTooNew`): an
older server must not write rows whose meaning it does not know.

Version 2 keeps messages and turns in rowid tables, found through a unique index on
(session_id, seq) and (session_id, turn_id). They were `WITHOUT ROWID` tables keyed by those
columns, whose B-tree holds whole rows: a row past about 1,000 bytes (a 1 KB message; a
turn's message and answer) left all but ~490 bytes on an overflow page of its own, and
SQLite compares a sought key with such a row only after reading the row whole, so every
insert and look-up read one overflow page per comparison, more as the tree grew. Measured
with 1 KB messages at history 200, 200 sessions (strace of the server): 19 pages read from
the file per turn, 14 of them overflow pages, and 13 pages written to the WAL; the store's
thread spent 0.42 ms of CPU a turn against 0.23 at history 5. With rowid tables: 1 page
read, 6 written, 0.14-0.17 ms against 0.12-0.13 ms, and the file is half the size. A rowid
table appends each row at its end, whole in its page; the indexes hold only the short keys.

Migrating copies both tables once, in one transaction, when the store first opens an older
file (a large file takes a while; the pages the old tables held stay in the file, free for
new rows). An older agenthost still opens a migrated file: it names every column it uses.
"""

from __future__ import annotations

import sqlite3

from agenthost.stores.pg_schema import SchemaTooNew

__all__ = ["SCHEMA_VERSION", "SchemaTooNew", "migrate"]

SCHEMA_VERSION = 2

_SESSIONS = """CREATE TABLE IF NOT EXISTS sessions (
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
    lease_expires_at REAL NOT NULL DEFAULT 0,
    state BLOB
) WITHOUT ROWID"""
_SESSIONS_EXPIRY = "CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (expires_at)"

_MESSAGES = """CREATE TABLE {name} (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    turn_id TEXT NOT NULL,
    created_at REAL NOT NULL
)"""
_MESSAGE_COLUMNS = "session_id, seq, role, content, turn_id, created_at"
_MESSAGES_KEY = "CREATE UNIQUE INDEX messages_key ON messages (session_id, seq)"

_TURNS = """CREATE TABLE {name} (
    session_id TEXT NOT NULL,
    turn_id TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    response TEXT,
    error_code TEXT,
    error_message TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    fingerprint TEXT NOT NULL DEFAULT ''
)"""
_TURN_COLUMNS = (
    "session_id, turn_id, status, message, response, error_code, error_message, created_at,"
    " updated_at, fingerprint"
)
_TURNS_KEY = "CREATE UNIQUE INDEX turns_key ON turns (session_id, turn_id)"


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the file to `SCHEMA_VERSION`, in one transaction; returns the version it had
    (0 for a new file or one made before versions were kept). `conn` is in autocommit mode
    (`isolation_level=None`)."""
    found = _version(conn)
    if found == SCHEMA_VERSION:
        return found
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"this database has schema version {found}; this agenthost knows up to"
            f" {SCHEMA_VERSION}: upgrade agenthost"
        )
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = _version(conn)  # another connection may have migrated it meanwhile
        if found < SCHEMA_VERSION:
            _upgrade(conn)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found


def _version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return row is not None


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _upgrade(conn: sqlite3.Connection) -> None:
    """Version 0 to 2: a new file, or one made before versions were kept. Adds the columns
    the oldest releases lacked, and rebuilds messages and turns as rowid tables."""
    conn.execute(_SESSIONS)
    conn.execute(_SESSIONS_EXPIRY)
    if "state" not in _columns(conn, "sessions"):  # made before sessions kept an agent state
        conn.execute("ALTER TABLE sessions ADD COLUMN state BLOB")
    if _has_table(conn, "turns") and "fingerprint" not in _columns(conn, "turns"):
        conn.execute("ALTER TABLE turns ADD COLUMN fingerprint TEXT NOT NULL DEFAULT ''")
    for table, create, columns, order, key in (
        ("messages", _MESSAGES, _MESSAGE_COLUMNS, "session_id, seq", _MESSAGES_KEY),
        ("turns", _TURNS, _TURN_COLUMNS, "session_id, created_at", _TURNS_KEY),
    ):
        if _has_table(conn, table):
            _rebuild(conn, table, create, columns, order)
        else:
            conn.execute(create.format(name=table))
        conn.execute(key)


def _rebuild(conn: sqlite3.Connection, table: str, create: str, columns: str, order: str) -> None:
    """Copy `table` into a rowid table of the same columns and put it in its place. Rows go
    in in `order`, so a session's rows start out side by side."""
    conn.execute(f"DROP TABLE IF EXISTS {table}_v2")
    conn.execute(create.format(name=f"{table}_v2"))
    conn.execute(
        f"INSERT INTO {table}_v2 ({columns}) SELECT {columns} FROM {table} ORDER BY {order}"
    )
    conn.execute(f"DROP TABLE {table}")
    conn.execute(f"ALTER TABLE {table}_v2 RENAME TO {table}")
