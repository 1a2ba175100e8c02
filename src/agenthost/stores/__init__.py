"""Session store backends behind one Protocol; `create_store(url)` picks one by URL scheme.

| URL | backend |
|---|---|
| `memory://` | in-process dicts (tests, single process) |
| `sqlite:///path/to.db` | embedded default, one file, WAL |
| `redis://host:port/db`, `rediss://...` | the fleet store |
| `redis+cluster://host:port` | Redis Cluster |
| `postgresql://user:pass@host:port/db`, `postgres://...` | PostgreSQL, the system of record |

`cache=redis://...` (or `redis+cluster://`) puts Redis in front of a PostgreSQL store
(`stores/cached.py`).
"""

from __future__ import annotations

from typing import Any

from agenthost.connections.redis import is_redis_url
from agenthost.connections.redis_py import load_redis_py
from agenthost.core.settings import is_postgres_url
from agenthost.stores.base import (
    Busy,
    Completed,
    Lease,
    Message,
    SessionInfo,
    SessionStore,
    Started,
    TurnError,
    TurnRecord,
)

__all__ = [
    "Busy",
    "Completed",
    "Lease",
    "Message",
    "SessionInfo",
    "SessionStore",
    "Started",
    "TurnError",
    "TurnRecord",
    "create_store",
]


def create_store(
    url: str, *, cache: str | None = None, cache_ttl: float = 3600.0, **options: Any
) -> SessionStore:
    """Build (not open) the store named by `url`, behind a Redis cache at `cache` (its
    entries kept `cache_ttl` seconds) if given; ValueError for an unknown scheme or a cache
    in front of anything but PostgreSQL."""
    if cache is not None:
        if not is_postgres_url(url):
            raise ValueError("a session cache goes in front of a postgresql:// store only")
        if not is_redis_url(cache):
            raise ValueError(f"the session cache must be redis:// or redis+cluster://: {cache!r}")
        from agenthost.stores.cached import CachedStore
        from agenthost.stores.postgres import PostgresStore

        return CachedStore(PostgresStore(url, **options), cache, ttl_s=cache_ttl)
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        from agenthost.stores.memory import MemoryStore

        return MemoryStore(url, **options)
    if scheme == "sqlite":
        from agenthost.stores.sqlite import SQLiteStore

        return SQLiteStore(url, **options)
    if is_redis_url(url):
        load_redis_py()  # before the module that imports redis-py
        from agenthost.stores.redis import RedisStore

        return RedisStore(url, **options)
    if is_postgres_url(url):
        from agenthost.stores.postgres import PostgresStore

        return PostgresStore(url, **options)
    raise ValueError(
        f"unknown store URL {url!r}: expected memory://, sqlite:///path, redis://host:port/db, "
        "redis+cluster://host:port or postgresql://user:pass@host:port/db"
    )
