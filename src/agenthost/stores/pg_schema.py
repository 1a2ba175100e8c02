"""The PostgreSQL store's schema: versioned SQL files shipped in `stores/migrations/`, applied
in order under an advisory lock, so any number of replicas may start against one database
at once and exactly one of them applies each file.

`agenthost_schema` records each applied version. A database whose schema is newer than the
files this build ships (a newer agenthost migrated it) is refused with `SchemaTooNew`: an
older server must not write rows whose meaning it does not know.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

__all__ = [
    "Migration",
    "SchemaStatus",
    "SchemaTooNew",
    "known_migrations",
    "migrate_schema",
    "schema_status",
]

# pg_advisory_lock key: "agenthst" as a big-endian int64, unlikely to clash with an app's.
LOCK_KEY = int.from_bytes(b"agenthst", "big") - 2**63

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_TABLE = """CREATE TABLE IF NOT EXISTS agenthost_schema (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer agenthost than this one."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


@dataclass(frozen=True)
class SchemaStatus:
    """`current`: the newest version applied (0: none); `known`: the newest this build has."""

    current: int
    known: int
    pending: list[int]

    @property
    def too_new(self) -> bool:
        return self.current > self.known

    def describe(self) -> str:
        if self.too_new:
            return (
                f"database schema is version {self.current}, newer than this agenthost knows"
                f" ({self.known}): upgrade agenthost before starting it against this database"
            )
        if self.pending:
            return f"schema version {self.current} of {self.known}; pending: {self.pending}"
        return f"schema version {self.current} (up to date)"


def known_migrations() -> list[Migration]:
    """The migration files in this package, oldest first."""
    found: list[Migration] = []
    for entry in resources.files("agenthost.stores").joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    return found


async def schema_status(conn: Any) -> SchemaStatus:
    """What is applied on `conn`'s database, against what this build knows."""
    known = known_migrations()
    exists = await conn.fetchval("SELECT to_regclass('agenthost_schema') IS NOT NULL")
    applied: set[int] = set()
    if exists:
        applied = {r[0] for r in await conn.fetch("SELECT version FROM agenthost_schema")}
    newest = max(applied, default=0)
    pending = [m.version for m in known if m.version not in applied]
    return SchemaStatus(newest, known[-1].version if known else 0, pending)


async def migrate_schema(conn: Any) -> list[int]:
    """Apply the pending migrations, each in its own transaction, under the advisory lock;
    return the versions applied here. Raise SchemaTooNew for a newer database."""
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await conn.execute(_TABLE)
        now = await schema_status(conn)
        if now.too_new:
            raise SchemaTooNew(now.describe())
        applied: list[int] = []
        for migration in known_migrations():
            if migration.version not in now.pending:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO agenthost_schema (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            applied.append(migration.version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
