"""`sqlite:///path.db`: the registry in the store's file (two tables beside the sessions),
so processes that share the file see each other. Each call is one short statement run on a
worker thread; SQLite's WAL lets readers and the one writer proceed together."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

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

__all__ = ["SQLiteRegistry"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS agenthost_processes (
    process_id TEXT PRIMARY KEY,
    expires_at REAL NOT NULL,
    record BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS agenthost_autoscale (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    record BLOB NOT NULL
);
"""


def sqlite_path(url: str) -> str:
    """`sqlite:///a/b.db` -> `a/b.db`; `sqlite:////abs.db` -> `/abs.db`."""
    return url.split("://", 1)[1].removeprefix("/").split("?", 1)[0] or ":memory:"


class SQLiteRegistry:
    def __init__(self, url: str) -> None:
        self.path = sqlite_path(url)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    async def _run(self, statement: str, *args: Any) -> list[Any]:
        def run() -> list[Any]:
            conn = self._connect()
            try:
                return conn.execute(statement, args).fetchall()
            finally:
                conn.close()

        try:
            return await asyncio.to_thread(run)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite registry: {exc}") from None

    async def open(self) -> None:
        def create() -> None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect()
            try:
                conn.executescript(_SCHEMA)
            finally:
                conn.close()

        try:
            await asyncio.to_thread(create)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite registry: {exc}") from None

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
