"""What the Redis cache in front of PostgreSQL promises beyond the shared contract (the
conformance suite runs against it as `postgres+cache`): a warm turn is served from Redis
and costs PostgreSQL two statements that build no window; a window or answer made stale by
another process is never used; a Redis killed and restarted empty, unreachable, or whose
entry expired, is bypassed or rehydrated from PostgreSQL, with nothing lost."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from agenthost.stores import Completed, Message, SessionStore, Started, create_store
from agenthost.stores.base import WindowMark
from agenthost.stores.cached import CachedStore
from agenthost.stores.postgres import PostgresStore
from tests.fixtures.agenthost import free_port
from tests.fixtures.redis import RedisServer, redis_cli

TTL = float("inf")
WINDOW = 4


def sid() -> str:
    return f"cache-{uuid.uuid4().hex[:12]}"


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"{what}: not within {within} s"
        await asyncio.sleep(0.05)


@pytest.fixture
def own_redis(redis_workdir: Path) -> AsyncIterator[RedisServer]:
    """A redis-server of this test alone (no persistence), to kill and restart empty."""
    server = RedisServer(redis_workdir)
    server.start()
    yield server  # type: ignore[misc]
    server.stop()


async def opened(store: SessionStore) -> SessionStore:
    await store.open()
    return store


@pytest.fixture
async def cached(postgres_url: str, own_redis: RedisServer) -> AsyncIterator[CachedStore]:
    store = create_store(postgres_url, cache=own_redis.url)
    assert isinstance(store, CachedStore)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def plain(postgres_url: str) -> AsyncIterator[PostgresStore]:
    """Another process on the same database, with no cache: its commits never reach Redis."""
    store = create_store(postgres_url)
    assert isinstance(store, PostgresStore)
    await store.open()
    yield store
    await store.close()


async def turn(
    store: SessionStore, session_id: str, turn_id: str, message: str, **kw: Any
) -> Started:
    begun = await store.begin_turn(
        session_id,
        turn_id,
        message,
        metadata_patch=kw.get("patch"),
        lease_ms=10_000,
        window=kw.get("window", WINDOW),
        ttl_s=TTL,
    )
    assert isinstance(begun, Started), begun
    await commit(store, begun, turn_id, message)
    return begun


async def commit(store: SessionStore, begun: Started, turn_id: str, message: str) -> None:
    """Commit the begun turn: `message` and its answer `re: <message>`."""
    n = begun.message_count
    await store.commit_turn(
        begun.lease,
        user=Message("user", message, turn_id, time.time(), n),
        assistant=Message("assistant", f"re: {message}", turn_id, time.time(), n + 1),
        metadata={**begun.metadata, "last": message},
        ttl_s=TTL,
    )


def contents(messages: list[Message]) -> list[str]:
    return [m.content for m in messages]


async def test_a_warm_turn_gets_the_window_and_metadata_from_the_cache(
    cached: CachedStore,
) -> None:
    s = sid()
    first = await turn(cached, s, "t0", "m0")
    assert first.created and cached.counts() == {"hit": 0, "miss": 1, "bypass": 0, "local": 0}
    for i in range(1, 6):
        expected = await cached.list_messages(s, WINDOW)  # PostgreSQL's window now
        assert expected is not None
        begun = await turn(cached, s, f"t{i}", f"m{i}", patch={"n": i})
        assert cached.counts()["hit"] == i, "every turn after the first is a hit"
        assert begun.history == expected
        assert begun.metadata == {"last": f"m{i - 1}", "n": i}
        assert begun.message_count == 2 * i and not begun.created
    assert cached.counts() == {"hit": 5, "miss": 1, "bypass": 0, "local": 0}


def redis_reads(server: RedisServer) -> int:
    """EVALSHA/EVAL calls the cache's redis-server has answered (each cache step is one)."""
    stats = redis_cli(server.port, "INFO", "commandstats")
    return sum(
        int(line.split("calls=")[1].split(",")[0])
        for line in stats.splitlines()
        if line.startswith(("cmdstat_evalsha:", "cmdstat_eval:"))
    )


async def test_a_begin_with_the_callers_own_window_reads_nothing_from_redis(
    cached: CachedStore, plain: PostgresStore, own_redis: RedisServer
) -> None:
    """The process's window cache (`known`) holds what Redis would send: PostgreSQL confirms
    that mark under the row lock and answers the delta after it, Redis is not read, and the
    commit still writes Redis, so a process without the window hits."""
    s = sid()
    first = await turn(cached, s, "t0", "m0")
    mark = WindowMark(first.created_at, 2)
    steps = redis_reads(own_redis)
    begun = await cached.begin_turn(
        s, "t1", "m1", metadata_patch=None, lease_ms=10_000, window=WINDOW, ttl_s=TTL, known=mark
    )
    assert isinstance(begun, Started) and begun.delta and begun.history == []
    assert redis_reads(own_redis) == steps, "the begin read Redis"
    assert cached.counts()["local"] == 1
    assert begun.message_count == 2
    await commit(cached, begun, "t1", "m1")
    assert redis_reads(own_redis) == steps + 1  # the commit's labelled append
    hits = cached.counts()["hit"]
    after = await turn(cached, s, "t2", "m2")  # no mark: served by Redis, appended to
    assert cached.counts()["hit"] == hits + 1
    assert contents(after.history) == ["m0", "re: m0", "m1", "re: m1"]
    # Another process committed since the caller's mark: PostgreSQL sends what came after.
    await turn(plain, s, "t3", "m3")
    behind = await cached.begin_turn(
        s,
        "t4",
        "m4",
        metadata_patch=None,
        lease_ms=10_000,
        window=WINDOW,
        ttl_s=TTL,
        known=WindowMark(first.created_at, 6),
    )
    assert isinstance(behind, Started) and behind.delta
    assert contents(behind.history) == ["m3", "re: m3"]
    assert behind.message_count == 8
    await commit(cached, behind, "t4", "m4")
    # Redis was at version 6 (plain's commit never reached it): the append onto version 8
    # dropped the entry, so the next reader without a mark misses and rebuilds it.
    misses = cached.counts()["miss"]
    last = await turn(cached, s, "t5", "m5")
    assert cached.counts()["miss"] == misses + 1
    assert contents(last.history) == ["m3", "re: m3", "m4", "re: m4"]


async def test_a_warm_window_longer_than_half_the_cap_is_whole(cached: CachedStore) -> None:
    """A history of more than half the window but less than all of it: the cached window
    plus what PostgreSQL adds is handed over whole (a negative slice start once cut it to
    its last `2 * len - window` messages)."""
    s = sid()
    for i in range(8):  # 16 messages, window 20: 10 < 16 < 20
        await turn(cached, s, f"t{i}", f"m{i}", window=20)
    expected = await cached.list_messages(s, 20)
    assert expected is not None and len(expected) == 16
    begun = await turn(cached, s, "t8", "m8", window=20)
    assert cached.counts()["hit"] == 8
    assert begun.history == expected


async def test_a_turn_committed_by_another_process_is_never_hidden_by_the_cache(
    cached: CachedStore, plain: PostgresStore
) -> None:
    s = sid()
    await turn(cached, s, "a1", "from a")
    await turn(cached, s, "a2", "from a again")  # the cache holds the window after a2
    await turn(plain, s, "b1", "from b")  # committed in PostgreSQL only
    begun = await turn(cached, s, "a3", "a sees b?")
    assert contents(begun.history)[-2:] == ["from b", "re: from b"]
    assert begun.metadata["last"] == "from b"
    assert begun.message_count == 6
    # ... and the window written back at that commit is the right one for the next turn.
    nxt = await turn(cached, s, "a4", "next")
    assert contents(nxt.history) == ["from b", "re: from b", "a sees b?", "re: a sees b?"]


async def test_a_cached_answer_of_a_deleted_session_is_never_replayed(
    cached: CachedStore, plain: PostgresStore
) -> None:
    s = sid()
    await turn(cached, s, "k", "old question")
    again = await cached.begin_turn(
        s, "k", "old question", metadata_patch=None, lease_ms=10_000, window=WINDOW, ttl_s=TTL
    )
    assert isinstance(again, Completed) and again.record.response == "re: old question"
    hits = cached.counts()["hit"]
    assert hits == 1  # the retry was answered from Redis
    # Another process deletes the session (its cache entry stays in Redis) and runs the same
    # turn id anew.
    assert await plain.delete_session(s)
    await turn(plain, s, "k", "new question")
    replay = await cached.begin_turn(
        s, "k", "new question", metadata_patch=None, lease_ms=10_000, window=WINDOW, ttl_s=TTL
    )
    assert isinstance(replay, Completed) and replay.record.response == "re: new question"
    assert cached.counts()["hit"] == hits


async def test_redis_killed_and_restarted_empty_between_turns_loses_nothing(
    cached: CachedStore, own_redis: RedisServer
) -> None:
    s = sid()
    for i in range(3):
        await turn(cached, s, f"t{i}", f"m{i}")
    os.kill(own_redis.pid, signal.SIGKILL)
    own_redis.proc.wait(10)  # type: ignore[union-attr]
    for i in range(3, 6):  # Redis is gone: PostgreSQL alone
        begun = await turn(cached, s, f"t{i}", f"m{i}")
        assert begun.message_count == 2 * i
    assert cached.counts()["bypass"] >= 3
    own_redis.start()  # empty: nothing was persisted
    assert redis_cli(own_redis.port, "dbsize") == "0"
    n = 6
    hits = cached.counts()["hit"]

    async def hit_again() -> bool:
        nonlocal n
        begun = await turn(cached, s, f"t{n}", f"m{n}")
        assert begun.message_count == 2 * n
        assert contents(begun.history)[-2:] == [f"m{n - 1}", f"re: m{n - 1}"]
        n += 1
        return cached.counts()["hit"] > hits

    await eventually(hit_again, 30, "the cache to serve turns again")
    messages = await cached.list_messages(s, 1000)
    assert messages is not None
    assert contents(messages)[::2] == [f"m{i}" for i in range(n)]


async def test_an_expired_cache_entry_is_rehydrated_from_postgres(
    postgres_url: str, own_redis: RedisServer
) -> None:
    store = await opened(create_store(postgres_url, cache=own_redis.url, cache_ttl=0.5))
    assert isinstance(store, CachedStore)
    try:
        s = sid()
        await turn(store, s, "t0", "m0")
        await turn(store, s, "t1", "m1")
        assert store.counts() == {"hit": 1, "miss": 1, "bypass": 0, "local": 0}

        async def expired() -> bool:
            return redis_cli(own_redis.port, "dbsize") == "0"

        await eventually(expired, 30, "the cache entry to expire")
        begun = await turn(store, s, "t2", "m2")
        assert contents(begun.history) == ["m0", "re: m0", "m1", "re: m1"]
        assert store.counts()["miss"] == 2
        begun = await turn(store, s, "t3", "m3")
        assert contents(begun.history) == ["m1", "re: m1", "m2", "re: m2"]
        assert store.counts()["hit"] == 2
    finally:
        await store.close()


async def test_an_unreachable_cache_is_bypassed_from_the_start(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agenthost.stores.cached")
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    store = await opened(create_store(postgres_url, cache=nobody))
    assert isinstance(store, CachedStore)
    try:
        await store.ping()  # readiness is PostgreSQL's
        s = sid()
        for i in range(3):
            begun = await turn(store, s, f"t{i}", f"m{i}")
            assert begun.message_count == 2 * i
        assert store.counts()["hit"] == 0 and store.counts()["bypass"] == 3
        assert await store.delete_session(s)
        warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(warnings) == 1, "one warning per outage, not one per turn"
    finally:
        await store.close()


async def test_a_warm_turn_costs_postgres_two_statements_and_a_cached_retry_one(
    cached: CachedStore, postgres_url: str
) -> None:
    """Counted by pg_stat_statements (top-level calls): begin and commit, each one call of
    a server-side function; a retry of a completed turn answered from Redis costs one
    read of the session's incarnation."""
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

        async def statements() -> int:
            count: int = await conn.fetchval(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s"
                " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()"
                " AND s.query NOT LIKE '%pg_stat_statements%'"
                # the store's listener checks its connection now and then
                " AND s.query NOT IN ('SELECT 1', 'SELECT $1')"
            )
            return count

        s = sid()
        await turn(cached, s, "t0", "warming up")
        before, hits = await statements(), cached.counts()["hit"]
        for i in range(1, 11):
            await turn(cached, s, f"t{i}", "x" * 200)
        assert cached.counts()["hit"] - hits == 10
        assert await statements() - before == 20
        before = await statements()
        retry = await cached.begin_turn(
            s, "t5", "x" * 200, metadata_patch=None, lease_ms=10_000, window=WINDOW, ttl_s=TTL
        )
        assert isinstance(retry, Completed)
        assert await statements() - before == 1
    finally:
        await conn.close()


async def test_a_redis_cluster_serves_as_the_cache(
    postgres_url: str, redis_cluster_url: str
) -> None:
    store = await opened(create_store(postgres_url, cache=redis_cluster_url))
    assert isinstance(store, CachedStore)
    try:
        s = sid()
        for i in range(4):
            begun = await turn(store, s, f"t{i}", f"m{i}")
        assert contents(begun.history) == ["m1", "re: m1", "m2", "re: m2"]
        again = await store.begin_turn(
            s, "t1", "m1", metadata_patch=None, lease_ms=10_000, window=WINDOW, ttl_s=TTL
        )
        assert isinstance(again, Completed) and again.record.response == "re: m1"
        assert store.counts() == {"hit": 4, "miss": 1, "bypass": 0, "local": 0}
        assert await store.delete_session(s)
    finally:
        await store.close()


async def test_a_hung_redis_is_bypassed_after_its_timeout(
    postgres_url: str, own_redis: RedisServer
) -> None:
    """SIGSTOP: Redis accepts nothing and answers nothing. A turn waits at most the cache's
    timeout (0.5 s), then turns go on against PostgreSQL; after SIGCONT the cache serves
    again."""
    store = await opened(create_store(postgres_url, cache=own_redis.url))
    assert isinstance(store, CachedStore)
    try:
        s = sid()
        await turn(store, s, "t0", "m0")
        await turn(store, s, "t1", "m1")
        os.kill(own_redis.pid, signal.SIGSTOP)
        try:
            for i in range(2, 5):
                begun = await asyncio.wait_for(turn(store, s, f"t{i}", f"m{i}"), 30)
                assert begun.message_count == 2 * i
            assert store.counts()["bypass"] >= 1
        finally:
            os.kill(own_redis.pid, signal.SIGCONT)
        n = 5
        hits = store.counts()["hit"]

        async def served_again() -> bool:
            nonlocal n
            begun = await turn(store, s, f"t{n}", f"m{n}")
            assert contents(begun.history)[-2:] == [f"m{n - 1}", f"re: m{n - 1}"]
            n += 1
            return store.counts()["hit"] > hits

        await eventually(served_again, 30, "the cache to serve again")
    finally:
        await store.close()
