"""The SQLite registry of a process that has the file's store open writes through the store's
connection: a heartbeat through a connection of its own made SQLite empty the store
connection's page cache, so the turns after it read their pages back from the file."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agenthost.registry import ProcessRecord, create_registry
from agenthost.registry.sqlite import SQLiteRegistry
from agenthost.stores import Message, Started
from agenthost.stores.sqlite import SQLiteStore


def _bytes_read() -> int:
    """Bytes this process has read by system calls, from files and pipes alike (Linux's
    /proc/self/io): the event loop's wake-ups read a few bytes, a page of the file 4,096."""
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar")).split()[1])


def _record(n: int) -> ProcessRecord:
    now = time.time()
    return ProcessRecord(
        process_id="p1",
        address="http://127.0.0.1:1",
        version="0",
        role="all",
        started_at=now,
        heartbeat_at=now,
        turns_total=n,
    )


async def _turn(store: SQLiteStore, turn_id: str) -> None:
    started = await store.begin_turn(
        "s", turn_id, "hi", metadata_patch=None, lease_ms=10_000, window=10, ttl_s=60
    )
    assert isinstance(started, Started)
    n = started.message_count
    await store.commit_turn(
        started.lease,
        user=Message("user", "hi", turn_id, 0.0, n),
        assistant=Message("assistant", "ho", turn_id, 0.0, n + 1),
        metadata={},
        ttl_s=60,
    )


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The paths of the SQLite connections opened while the test runs."""
    opened: list[str] = []
    connect = sqlite3.connect

    def counting(path: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        opened.append(str(path))
        return connect(path, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", counting)
    yield opened


async def test_the_registry_of_the_stores_file_uses_the_stores_connection(
    tmp_path: Path, connections: list[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    store = SQLiteStore(url)
    await store.open()
    registry = create_registry(url, store)
    assert isinstance(registry, SQLiteRegistry) and registry.store is store
    await registry.open()
    try:
        await registry.beat(_record(1), 30)
        assert [r.turns_total for r in await registry.processes()] == [1]
        await registry.remove("p1")
        assert await registry.processes() == []
    finally:
        await registry.close()
        await store.close()
    assert len(connections) == 1  # the store's own


async def test_another_files_store_is_not_shared(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'a.db'}")
    registry = create_registry(f"sqlite:///{tmp_path / 'b.db'}", store)
    assert isinstance(registry, SQLiteRegistry) and registry.store is None


async def test_a_heartbeat_leaves_the_stores_page_cache_whole(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    store = SQLiteStore(url)
    await store.open()
    registry = create_registry(url, store)
    await registry.open()
    try:
        await _turn(store, "warm-1")
        await registry.beat(_record(0), 30)
        await _turn(store, "warm-2")
        read = 0
        for i in range(5):
            await registry.beat(_record(i), 30)
            before = _bytes_read()
            await _turn(store, f"t{i}")
            read += _bytes_read() - before
    finally:
        await registry.close()
        await store.close()
    # After a beat through another connection, each turn read back at least the root
    # pages of the tables and indexes it touches: 5 turns, 25 pages or more.
    assert read < 4096
