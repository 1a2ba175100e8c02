"""The `registry` fixture: one opened process registry per backend, so the conformance
suite runs against every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agenthost.registry import ProcessRegistry, create_registry

BACKENDS = ["memory", "sqlite", "redis", "redis-cluster", "postgres"]


def _url(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if name == "memory":
        return "memory://"
    if name == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    fixture = {"redis": "redis_url", "redis-cluster": "redis_cluster_url",
               "postgres": "postgres_url"}[name]  # fmt: skip
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture(params=BACKENDS)
async def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _url(request.param, request, tmp_path)


@pytest.fixture
async def registry(registry_url: str) -> AsyncIterator[ProcessRegistry]:
    r = create_registry(registry_url)
    await r.open()
    try:
        for record in await r.processes():  # the Redis and PostgreSQL servers are shared
            await r.remove(record.process_id)
        yield r
    finally:
        await r.close()
