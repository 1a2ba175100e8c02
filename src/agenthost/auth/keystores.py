"""API key stores, one per session store backend; `create_key_store(url)` picks by scheme.

| store URL | keys kept in |
|---|---|
| `memory://` | this process (tests) |
| `sqlite:///path.db` | table `api_keys` in the same file |
| `redis://...`, `redis+cluster://...` | `ah:{keys}:hash:<sha256>` (record), `ah:{keys}:ids` |
| `postgresql://...` | table `agenthost_api_keys` (schema migration 2) |

The two Redis keys share a hash tag, so they live on one Redis Cluster slot.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import msgspec

from agenthost.auth.keys import KeyRecord, KeyStore
from agenthost.connections.redis import RedisSettings, close_clients, is_redis_url
from agenthost.connections.redis_py import load_redis_py
from agenthost.core.errors import StoreUnavailable
from agenthost.core.settings import is_postgres_url

__all__ = [
    "MemoryKeyStore",
    "RedisKeyStore",
    "SQLiteKeyStore",
    "create_key_store",
]

_encode = msgspec.msgpack.encode
_decode_record = msgspec.msgpack.Decoder(KeyRecord).decode


def create_key_store(url: str) -> KeyStore:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        return MemoryKeyStore()
    if scheme == "sqlite":
        return SQLiteKeyStore(url)
    if is_redis_url(url):
        return RedisKeyStore(url)
    if is_postgres_url(url):
        from agenthost.auth.pg_keystore import PostgresKeyStore

        return PostgresKeyStore(url)
    raise ValueError(f"no API key store for store URL {url!r}")


def _revoked(record: KeyRecord) -> KeyRecord:
    return msgspec.structs.replace(record, revoked_at=time.time())


class MemoryKeyStore:
    def __init__(self) -> None:
        self._by_hash: dict[str, KeyRecord] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def add(self, record: KeyRecord) -> None:
        self._by_hash[record.key_hash] = record

    async def by_hash(self, key_hash: str) -> KeyRecord | None:
        return self._by_hash.get(key_hash)

    async def list(self, tenant: str | None = None) -> list[KeyRecord]:
        records = [r for r in self._by_hash.values() if tenant is None or r.tenant == tenant]
        return sorted(records, key=lambda r: r.created_at)

    async def revoke(self, key_id: str) -> bool:
        for key_hash, record in self._by_hash.items():
            if record.key_id == key_id and record.active:
                self._by_hash[key_hash] = _revoked(record)
                return True
        return False


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY,
    key_id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    created_at REAL NOT NULL,
    record BLOB NOT NULL
) WITHOUT ROWID;
"""


class SQLiteKeyStore:
    """Keys in the session database file, through short connections on a worker thread
    (key lookups are cached by the authenticator, so they are rare)."""

    def __init__(self, url: str) -> None:
        path = url[len("sqlite://") :]
        self.path = path[1:] if path.startswith("/") else path

    def _run(self, fn: Any, *args: Any) -> Any:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SQLITE_SCHEMA)
            return fn(conn, *args)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite key store: {exc}") from None
        finally:
            conn.close()

    async def open(self) -> None:
        await asyncio.to_thread(self._run, lambda conn: None)

    async def close(self) -> None:
        return None

    async def add(self, record: KeyRecord) -> None:
        def add(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?)",
                (record.key_hash, record.key_id, record.tenant, record.created_at,
                 _encode(record)),
            )  # fmt: skip

        await asyncio.to_thread(self._run, add)

    async def by_hash(self, key_hash: str) -> KeyRecord | None:
        def get(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT record FROM api_keys WHERE key_hash = ?", (key_hash,)
            ).fetchone()
            return None if row is None else bytes(row[0])

        raw = await asyncio.to_thread(self._run, get)
        return None if raw is None else _decode_record(raw)

    async def list(self, tenant: str | None = None) -> list[KeyRecord]:
        def rows(conn: sqlite3.Connection) -> list[bytes]:
            if tenant is None:
                cursor = conn.execute("SELECT record FROM api_keys ORDER BY created_at")
            else:
                cursor = conn.execute(
                    "SELECT record FROM api_keys WHERE tenant = ? ORDER BY created_at", (tenant,)
                )
            return [bytes(r[0]) for r in cursor]

        return [_decode_record(raw) for raw in await asyncio.to_thread(self._run, rows)]

    async def revoke(self, key_id: str) -> bool:
        def revoke(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT record FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
            if row is None:
                return False
            record = _decode_record(bytes(row[0]))
            if not record.active:
                return False
            conn.execute(
                "UPDATE api_keys SET record = ? WHERE key_id = ?",
                (_encode(_revoked(record)), key_id),
            )
            return True

        result: bool = await asyncio.to_thread(self._run, revoke)
        return result


_IDS = "ah:{keys}:ids"


def _hash_key(key_hash: str) -> str:
    return "ah:{keys}:hash:" + key_hash


class RedisKeyStore:
    """Keys in the store's Redis, through a light redis-py client (lookups are cached by the
    authenticator, so they are rare)."""

    def __init__(self, url: str) -> None:
        # redis-py is imported by the key store that uses it, not by `import agenthost`.
        load_redis_py()
        import redis.exceptions as rexc

        self.url = url
        self.settings = RedisSettings.from_url(url)
        self._client: Any = None
        self._failures: tuple[type[BaseException], ...] = (
            rexc.ConnectionError, rexc.TimeoutError, rexc.ClusterDownError, OSError,
        )  # fmt: skip

    async def open(self) -> None:
        self._client = self.settings.light_client()

    async def close(self) -> None:
        await close_clients(None, self._client)
        self._client = None

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except self._failures as exc:
            raise StoreUnavailable(f"redis key store: {exc}") from None

    async def add(self, record: KeyRecord) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(_hash_key(record.key_hash), _encode(record))
            pipe.hset(_IDS, record.key_id, record.key_hash)
            await self._call(pipe.execute())

    async def by_hash(self, key_hash: str) -> KeyRecord | None:
        raw = await self._call(self._client.get(_hash_key(key_hash)))
        return None if raw is None else _decode_record(raw)

    async def list(self, tenant: str | None = None) -> list[KeyRecord]:
        hashes = list((await self._call(self._client.hgetall(_IDS))).values())
        if not hashes:
            return []
        raws = await self._call(self._client.mget([_hash_key(h.decode()) for h in hashes]))
        records = [_decode_record(raw) for raw in raws if raw is not None]
        records = [r for r in records if tenant is None or r.tenant == tenant]
        return sorted(records, key=lambda r: r.created_at)

    async def revoke(self, key_id: str) -> bool:
        key_hash = await self._call(self._client.hget(_IDS, key_id))
        if key_hash is None:
            return False
        record = await self.by_hash(key_hash.decode())
        if record is None or not record.active:
            return False
        await self._call(self._client.set(_hash_key(record.key_hash), _encode(_revoked(record))))
        return True
