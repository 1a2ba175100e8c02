"""API keys in the PostgreSQL store's database (`agenthost_api_keys`, schema migration 2).

Lookups are rare (the authenticator caches them for `--auth-cache-ttl`), so a small pool of
its own; opening applies pending migrations, so `agenthost keys create` works against a
database no server has started on yet.
"""

from __future__ import annotations

import time

import msgspec

from agenthost.auth.keys import KeyRecord
from agenthost.stores.pg_pool import PgPool
from agenthost.stores.pg_schema import migrate_schema

__all__ = ["PostgresKeyStore"]

_encode = msgspec.msgpack.encode
_decode_record = msgspec.msgpack.Decoder(KeyRecord).decode


class PostgresKeyStore:
    def __init__(self, url: str) -> None:
        self._db = PgPool(url, "postgresql key store", max_size=4)

    async def open(self) -> None:
        await self._db.open(migrate_schema)

    async def close(self) -> None:
        await self._db.close()

    async def add(self, record: KeyRecord) -> None:
        await self._db.call(
            "execute",
            "INSERT INTO agenthost_api_keys VALUES ($1, $2, $3, $4, $5)",
            record.key_hash,
            record.key_id,
            record.tenant,
            record.created_at,
            _encode(record),
        )

    async def by_hash(self, key_hash: str) -> KeyRecord | None:
        raw = await self._db.call(
            "fetchval", "SELECT record FROM agenthost_api_keys WHERE key_hash = $1", key_hash
        )
        return None if raw is None else _decode_record(raw)

    async def list(self, tenant: str | None = None) -> list[KeyRecord]:
        rows = await self._db.call(
            "fetch",
            "SELECT record FROM agenthost_api_keys WHERE $1::text IS NULL OR tenant = $1"
            " ORDER BY created_at",
            tenant,
        )
        return [_decode_record(r[0]) for r in rows]

    async def revoke(self, key_id: str) -> bool:
        raw = await self._db.call(
            "fetchval", "SELECT record FROM agenthost_api_keys WHERE key_id = $1", key_id
        )
        if raw is None:
            return False
        record = _decode_record(raw)
        if not record.active:
            return False
        revoked = msgspec.structs.replace(record, revoked_at=time.time())
        status = await self._db.call(
            "execute",
            "UPDATE agenthost_api_keys SET record = $2 WHERE key_id = $1 AND record = $3",
            key_id,
            _encode(revoked),
            raw,
        )
        return bool(status == "UPDATE 1")
