"""Process registry backends behind one Protocol; `create_registry(url)` picks one by the
store URL's scheme, so the registry lives wherever the fleet's sessions do.

| URL | backend |
|---|---|
| `memory://`, `sqlite:///:memory:` | this process only |
| `sqlite:///path/to.db` | two tables in the store's file (processes sharing it see each other) |
| `redis://...`, `redis+cluster://...` | a hash and a list on one slot (`{ah:fleet}`) |
| `postgresql://...` | two tables in the store's database |

A SQLite registry given the process's own store of the file writes through that store's
connection (`registry/sqlite.py` says why).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agenthost.connections.redis import is_redis_url
from agenthost.connections.redis_py import load_redis_py
from agenthost.core.settings import is_postgres_url
from agenthost.registry.base import (
    AutoscaleDecision,
    ProcessRecord,
    ProcessRegistry,
    Sample,
)

if TYPE_CHECKING:
    from agenthost.stores.base import SessionStore

__all__ = [
    "AutoscaleDecision",
    "ProcessRecord",
    "ProcessRegistry",
    "Sample",
    "create_registry",
]


def create_registry(url: str, store: SessionStore | None = None) -> ProcessRegistry:
    """Build (not open) the registry for the store `url`; ValueError for an unknown scheme.
    `store` is this process's store of `url`, if it has one: a SQLite registry writes through
    its connection (see `registry/sqlite.py`), so it must be opened after the store and
    closed before it."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory" or (scheme == "sqlite" and url.endswith(":memory:")):
        from agenthost.registry.memory import MemoryRegistry

        return MemoryRegistry()
    if scheme == "sqlite":
        from agenthost.registry.sqlite import SQLiteRegistry
        from agenthost.stores.sqlite import SQLiteStore

        shared = store if isinstance(store, SQLiteStore) and store.url == url else None
        return SQLiteRegistry(url, store=shared)
    if is_redis_url(url):
        load_redis_py()  # before the module that imports redis-py
        from agenthost.registry.redis import RedisRegistry

        return RedisRegistry(url)
    if is_postgres_url(url):
        from agenthost.registry.postgres import PostgresRegistry

        return PostgresRegistry(url)
    raise ValueError(f"no process registry for store URL {url!r}")
