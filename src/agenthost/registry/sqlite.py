"""`sqlite:///path.db`: the registry in the store's file (two tables beside the sessions),
so processes that share the file see each other. Each call is one short statement.

Given the process's own `SQLiteStore` of the same file, the statements run on the store's
connection, in its group commits. Through a second connection, every heartbeat (one each
`--heartbeat-interval`, 2 s) would be a write by another connection, and SQLite empties a
connection's whole page cache when it finds that another one changed the WAL since its
last transaction: the store's next turns then read back from the file every page they
touch. Without a store (another process, `agenthost fleet`'s autoscaler), each call opens
its own connection on a worker thread; SQLite's WAL lets readers and the one writer proceed
together."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from agenthost.core.errors import StoreUnavailable
from agenthost.registry.base import (
    DECISIONS_KEPT,
    AutoscaleDecision,
    ProcessRecord,
    decode_decision,
    decode_record,
    encode,
    order,
)

__all__ = ["SQLiteRegistry", "SharedConnection"]

T = TypeVar("T")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS agenthost_processes (
    process_id TEXT PRIMARY KEY,
    expires_at REAL NOT NULL,
    record BLOB NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS agenthost_autoscale (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    record BLOB NOT NULL
)""",
)


class SharedConnection(Protocol):
    """What the registry needs of the store that owns the file's connection (`SQLiteStore`):
    run a function on that connection, inside a transaction, raising StoreUnavailable."""

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> Awaitable[T]: ...


def sqlite_path(url: str) -> str:
    """`sqlite:///a/b.db` -> `a/b.db`; `sqlite:////abs.db` -> `/abs.db`."""
    return url.split("://", 1)[1].removeprefix("/").split("?", 1)[0] or ":memory:"


class SQLiteRegistry:
    def __init__(self, url: str, *, store: SharedConnection | None = None) -> None:
        self.path = sqlite_path(url)
        self.store = store

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    async def _on_connection(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn` on the store's connection if there is one, else on a connection of its own."""
        if self.store is not None:
            return await self.store.run(fn)

        def run() -> T:
            conn = self._connect()
            try:
                return fn(conn)
            finally:
                conn.close()

        try:
            return await asyncio.to_thread(run)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite registry: {exc}") from None

    async def _run(self, statement: str, *args: Any) -> list[Any]:
        return await self._on_connection(lambda conn: conn.execute(statement, args).fetchall())

    async def open(self) -> None:
        def create(conn: sqlite3.Connection) -> None:
            for statement in _SCHEMA:
                conn.execute(statement)

        if self.store is None and self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        await self._on_connection(create)

    async def close(self) -> None:
        return None

    async def beat(self, record: ProcessRecord, ttl_s: float) -> None:
        await self._run(
            "INSERT OR REPLACE INTO agenthost_processes VALUES (?, ?, ?)",
            record.process_id,
            time.time() + ttl_s,
            encode(record),
        )

    async def remove(self, process_id: str) -> None:
        await self._run("DELETE FROM agenthost_processes WHERE process_id = ?", process_id)

    async def processes(self) -> list[ProcessRecord]:
        rows = await self._run(
            "SELECT record FROM agenthost_processes WHERE expires_at > ?", time.time()
        )
        return order([decode_record(row[0]) for row in rows])

    async def add_decision(self, decision: AutoscaleDecision) -> None:
        await self._run("INSERT INTO agenthost_autoscale (record) VALUES (?)", encode(decision))
        await self._run(
            "DELETE FROM agenthost_autoscale WHERE id <= "
            "(SELECT MAX(id) FROM agenthost_autoscale) - ?",
            DECISIONS_KEPT,
        )

    async def decisions(self, limit: int = 20) -> list[AutoscaleDecision]:
        rows = await self._run(
            "SELECT record FROM agenthost_autoscale ORDER BY id DESC LIMIT ?", limit
        )
        return [decode_decision(row[0]) for row in rows]
