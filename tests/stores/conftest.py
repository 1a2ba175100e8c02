"""The `store` fixture: one opened store per backend, so the conformance suite runs against
every backend. A backend joins by adding its name to BACKENDS and a branch to `_url`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agenthost.stores import SessionStore, create_store
from agenthost.stores.postgres import PostgresStore

BACKENDS = [
    "memory",
    "sqlite",
    "redis",
    "redis-cluster",
    "postgres",
    "postgres-batched",
    "postgres+cache",
    "postgres+cluster-cache",
]


def _url(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if name == "memory":
        return "memory://"
    if name == "sqlite":
        return f"sqlite:///{tmp_path / 'sessions.db'}"
    if name == "redis":
        url: str = request.getfixturevalue("redis_url")
        return url
    if name == "redis-cluster":
        cluster_url: str = request.getfixturevalue("redis_cluster_url")
        return cluster_url
    if name == "postgres-batched":
        # Every turn step through the batch functions (stores/pg_batch.py), as a batch of one.
        batched: str = request.getfixturevalue("postgres_url")
        return f"{batched}?batch_min=1"
    if name.startswith("postgres"):
        pg_url: str = request.getfixturevalue("postgres_url")
        return pg_url
    raise AssertionError(f"no URL for backend {name}")


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SessionStore]:
    cache = {"postgres+cache": "redis_url", "postgres+cluster-cache": "redis_cluster_url"}.get(
        request.param
    )
    cache_url = None if cache is None else request.getfixturevalue(cache)
    s = create_store(_url(request.param, request, tmp_path), cache=cache_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def postgres_store(postgres_url: str) -> AsyncIterator[PostgresStore]:
    """An open PostgreSQL store on the test PostgreSQL server."""
    s = create_store(postgres_url)
    assert isinstance(s, PostgresStore)
    await s.open()
    yield s
    await s.close()
