"""What the Redis backends promise beyond the shared contract: layout, TTLs, round trips,
and behaviour while the server is down."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from agenthost.errors import StoreUnavailable
from agenthost.stores import Message, Started, create_store
from agenthost.stores.redis import RedisStore
from tests.fixtures.redis import RedisCluster, RedisServer


def sid() -> str:
    return f"r-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    s = create_store(redis_url)
    assert isinstance(s, RedisStore)
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def one_turn(store: RedisStore, session_id: str, turn_id: str, ttl_s: float = 60) -> None:
    st = await store.begin_turn(
        session_id, turn_id, "q", metadata_patch=None, lease_ms=5000, window=10, ttl_s=ttl_s
    )
    assert isinstance(st, Started)
    n = st.message_count
    await store.commit_turn(
        st.lease,
        user=Message("user", "q", turn_id, time.time(), n),
        assistant=Message("assistant", "a", turn_id, time.time(), n + 1),
        metadata={},
        ttl_s=ttl_s,
    )


async def test_every_key_of_a_session_shares_the_ttl_and_the_hash_tag(
    store: RedisStore, raw: aioredis.Redis
) -> None:
    s = sid()
    await one_turn(store, s, "t1", ttl_s=100)
    running = await store.begin_turn(
        s, "t2", "q", metadata_patch=None, lease_ms=5000, window=10, ttl_s=100
    )
    assert isinstance(running, Started)
    keys = sorted(k.decode() for k in await raw.keys(f"ah:{{{s}}}:*"))
    assert keys == [f"ah:{{{s}}}:{name}" for name in ("lease", "meta", "msgs", "turns")]
    for key in keys:
        ttl_ms = await raw.pttl(key)
        limit = 5_000 if key.endswith(":lease") else 100_000
        assert 0 < ttl_ms <= limit, (key, ttl_ms)
        if not key.endswith(":lease"):
            assert ttl_ms > 90_000, (key, ttl_ms)


async def commandstats(raw: aioredis.Redis) -> dict[str, int]:
    info: dict[str, Any] = await raw.info("commandstats")
    return {name: int(stats["calls"]) for name, stats in info.items()}


async def test_each_turn_step_is_one_script_call(store: RedisStore, raw: aioredis.Redis) -> None:
    s = sid()
    await one_turn(store, s, "warm")  # loads the scripts
    for _ in range(3):
        await one_turn(store, s, f"t{uuid.uuid4().hex[:6]}")
    await raw.config_resetstat()
    await one_turn(store, s, "measured")
    calls = await commandstats(raw)
    calls.pop("cmdstat_config|resetstat", None)
    calls.pop("cmdstat_config", None)
    calls.pop("cmdstat_info", None)
    # begin + commit: two EVALSHA from the client; everything else runs inside them.
    assert calls.get("cmdstat_evalsha") == 2, calls
    client_commands = {
        k: v for k, v in calls.items() if not k.startswith(("cmdstat_evalsha", "cmdstat_spublish"))
    }
    assert all(
        name
        in {
            "cmdstat_exists",
            "cmdstat_hget",
            "cmdstat_get",
            "cmdstat_hincrby",
            "cmdstat_hmget",
            "cmdstat_set",
            "cmdstat_hset",
            "cmdstat_pexpire",
            "cmdstat_lrange",
            "cmdstat_rpush",
            "cmdstat_del",
        }
        for name in client_commands
    ), calls


async def test_history_window_reads_only_the_tail(store: RedisStore, raw: aioredis.Redis) -> None:
    s = sid()
    for i in range(30):
        await one_turn(store, s, f"t{i}")
    st = await store.begin_turn(
        s, "last", "q", metadata_patch=None, lease_ms=5000, window=4, ttl_s=60
    )
    assert isinstance(st, Started)
    assert [m.seq for m in st.history] == [56, 57, 58, 59]
    assert await raw.llen(f"ah:{{{s}}}:msgs") == 60


async def test_unreachable_redis_fails_fast_and_recovers_within_two_seconds(
    durable_redis: RedisServer,
) -> None:
    store = create_store(durable_redis.url)
    await store.open()
    try:
        s = sid()
        st = await store.begin_turn(
            s, "t1", "q", metadata_patch=None, lease_ms=5000, window=10, ttl_s=60
        )
        assert isinstance(st, Started)
        durable_redis.stop()
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            await store.get_session(s)
        assert time.monotonic() - t0 < 3.0
        assert caught.value.status == 503 and caught.value.retry_after
        with pytest.raises(StoreUnavailable):
            await store.ping()
        durable_redis.start()
        restarted = time.monotonic()
        while True:
            try:
                await store.ping()
                break
            except StoreUnavailable:
                assert time.monotonic() - restarted < 2.0, "not back within 2 s"
        assert time.monotonic() - restarted < 2.0
        info = await store.get_session(s)
        assert info is not None, "the durable server kept the session"
    finally:
        await store.close()


async def test_cluster_keeps_a_session_on_one_slot(redis_cluster_server: RedisCluster) -> None:
    store = create_store(redis_cluster_server.url)
    await store.open()
    client = AsyncRedisCluster(host="127.0.0.1", port=redis_cluster_server.nodes[0].port)
    try:
        await client.initialize()
        sessions = [sid() for _ in range(20)]
        for s in sessions:
            await one_turn(store, s, "t1")  # type: ignore[arg-type]
        slots = set()
        for s in sessions:
            session_slots = {client.keyslot(f"ah:{{{s}}}:{n}") for n in ("meta", "msgs", "turns")}
            assert len(session_slots) == 1
            slots |= session_slots
            nodes = {client.get_node_from_key(f"ah:{{{s}}}:meta").name}
            assert len(nodes) == 1
        # Twenty sessions spread over the masters rather than piling on one.
        owners = {client.get_node_from_key(f"ah:{{{s}}}:meta").name for s in sessions}
        assert len(owners) > 1
    finally:
        await client.aclose()
        await store.close()
