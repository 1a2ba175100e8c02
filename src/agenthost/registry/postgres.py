"""`postgresql://`: the registry in the store's database, two small tables of the store's
schema (migration 10, applied on open as the store does, so a registry opened before any
server works too), on a pool of its own: heartbeats are a few writes a second per fleet,
off the turn's path."""

from __future__ import annotations

import time

from agenthost.registry.base import (
    DECISIONS_KEPT,
    AutoscaleDecision,
    ProcessRecord,
    decode_decision,
    decode_record,
    encode,
    order,
)
from agenthost.stores.pg_pool import PgPool
from agenthost.stores.pg_schema import migrate_schema

__all__ = ["PostgresRegistry"]


class PostgresRegistry:
    def __init__(self, url: str) -> None:
        self._db = PgPool(url, "postgresql registry", max_size=2)

    async def open(self) -> None:
        await self._db.open(migrate_schema)

    async def close(self) -> None:
        await self._db.close()

    async def beat(self, record: ProcessRecord, ttl_s: float) -> None:
        await self._db.call(
            "execute",
            "INSERT INTO agenthost_processes VALUES ($1, $2, $3) ON CONFLICT (process_id) "
            "DO UPDATE SET expires_at = EXCLUDED.expires_at, record = EXCLUDED.record",
            record.process_id,
            time.time() + ttl_s,
            encode(record),
        )

    async def remove(self, process_id: str) -> None:
        await self._db.call(
            "execute", "DELETE FROM agenthost_processes WHERE process_id = $1", process_id
        )

    async def processes(self) -> list[ProcessRecord]:
        rows = await self._db.call(
            "fetch", "SELECT record FROM agenthost_processes WHERE expires_at > $1", time.time()
        )
        return order([decode_record(row[0]) for row in rows])

    async def add_decision(self, decision: AutoscaleDecision) -> None:
        await self._db.call(
            "execute", "INSERT INTO agenthost_autoscale (record) VALUES ($1)", encode(decision)
        )
        await self._db.call(
            "execute",
            "DELETE FROM agenthost_autoscale WHERE id <= "
            "(SELECT max(id) FROM agenthost_autoscale) - $1",
            DECISIONS_KEPT,
        )

    async def decisions(self, limit: int = 20) -> list[AutoscaleDecision]:
        rows = await self._db.call(
            "fetch", "SELECT record FROM agenthost_autoscale ORDER BY id DESC LIMIT $1", limit
        )
        return [decode_decision(row[0]) for row in rows]
