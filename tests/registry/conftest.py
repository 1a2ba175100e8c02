"""The `registry` fixture: one opened process registry per backend, so the conformance
suite runs against every backend. `sqlite+store` is the SQLite registry of a process that
has the file's store open: it writes through the store's connection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agenthost.registry import ProcessRegistry, create_registry
from agenthost.stores.sqlite import SQLiteStore

BACKENDS = ["memory", "sqlite", "sqlite+store", "redis", "redis-cluster", "postgres"]


def _url(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if name == "memory":
        return "memory://"
    if name in ("sqlite", "sqlite+store"):
        return f"sqlite:///{tmp_path / 'registry.db'}"
    fixture = {"redis": "redis_url", "redis-cluster": "redis_cluster_url",
               "postgres": "postgres_url"}[name]  # fmt: skip
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def registry_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _url(backend, request, tmp_path)


@pytest.fixture
async def registry(backend: str, registry_url: str) -> AsyncIterator[ProcessRegistry]:
    store = SQLiteStore(registry_url) if backend == "sqlite+store" else None
    if store is not None:
        await store.open()
    r = create_registry(registry_url, store)
    await r.open()
    try:
        for record in await r.processes():  # the Redis and PostgreSQL servers are shared
            await r.remove(record.process_id)
        yield r
    finally:
        await r.close()
        if store is not None:
            await store.close()
