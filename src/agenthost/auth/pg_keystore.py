"""API keys in the PostgreSQL store's database (`agenthost_api_keys`, schema migration 2).

Lookups are rare (the authenticator caches them for `--auth-cache-ttl`), so a small pool of
its own; opening applies pending migrations, so `agenthost keys create` works against a
database no server has started on yet.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import msgspec

from agenthost.auth.keys import KeyRecord
from agenthost.core.errors import StoreUnavailable
from agenthost.stores.pg_schema import migrate_schema
from agenthost.stores.postgres import FAILURES, split_options

__all__ = ["PostgresKeyStore"]

_encode = msgspec.msgpack.encode
_decode_record = msgspec.msgpack.Decoder(KeyRecord).decode


class PostgresKeyStore:
    def __init__(self, url: str) -> None:
        self.dsn, options = split_options(url)
        self.connect_timeout = options["connect_timeout"]
        self.command_timeout = options["command_timeout"]
        self._pool: Any = None

    async def open(self) -> None:
        try:
            conn = await asyncpg.connect(self.dsn, timeout=self.connect_timeout)
            try:
                await migrate_schema(conn)
            finally:
                await conn.close()
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=0,
                max_size=4,
                timeout=self.connect_timeout,
                command_timeout=self.command_timeout,
            )
        except FAILURES as exc:
            raise StoreUnavailable(f"postgresql key store: {exc}") from None

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _call(self, method: str, query: str, *args: Any) -> Any:
        if self._pool is None:
            raise StoreUnavailable("the postgresql key store is not open")
        try:
            return await getattr(self._pool, method)(query, *args)
        except FAILURES as exc:
            raise StoreUnavailable(f"postgresql key store: {exc}") from None

    async def add(self, record: KeyRecord) -> None:
        await self._call(
            "execute",
            "INSERT INTO agenthost_api_keys VALUES ($1, $2, $3, $4, $5)",
            record.key_hash,
            record.key_id,
            record.tenant,
            record.created_at,
            _encode(record),
        )

    async def by_hash(self, key_hash: str) -> KeyRecord | None:
        raw = await self._call(
            "fetchval", "SELECT record FROM agenthost_api_keys WHERE key_hash = $1", key_hash
        )
        return None if raw is None else _decode_record(raw)

    async def list(self, tenant: str | None = None) -> list[KeyRecord]:
        rows = await self._call(
            "fetch",
            "SELECT record FROM agenthost_api_keys WHERE $1::text IS NULL OR tenant = $1"
            " ORDER BY created_at",
            tenant,
        )
        return [_decode_record(r[0]) for r in rows]

    async def revoke(self, key_id: str) -> bool:
        raw = await self._call(
            "fetchval", "SELECT record FROM agenthost_api_keys WHERE key_id = $1", key_id
        )
        if raw is None:
            return False
        record = _decode_record(raw)
        if not record.active:
            return False
        revoked = msgspec.structs.replace(record, revoked_at=time.time())
        status = await self._call(
            "execute",
            "UPDATE agenthost_api_keys SET record = $2 WHERE key_id = $1 AND record = $3",
            key_id,
            _encode(revoked),
            raw,
        )
        return bool(status == "UPDATE 1")
