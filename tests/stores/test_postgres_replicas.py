"""History reads from a streaming read replica (`pg_basebackup -R`, a second postgres): reads
go to the replica, a reader who names a `min_seq` the replica has not replayed yet is
answered by the primary, and a replica that is down costs nothing but the detour."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from agenthost.stores import Message, Started, create_store
from agenthost.stores.postgres import PostgresStore
from tests.fixtures.agenthost import AgentHostProcess
from tests.fixtures.postgres import PostgresServer

Pair = tuple[PostgresServer, PostgresServer]


async def replayed(standby: PostgresServer, database: str, session_id: str, count: int) -> None:
    """Wait until the standby has the session with `count` messages."""
    deadline = time.monotonic() + 15
    query = f"SELECT count(*) FROM agenthost_messages WHERE session_id = '{session_id}'"
    while True:
        try:
            if await asyncio.to_thread(standby.sql, query, database) == str(count):
                return
        except AssertionError:
            pass  # the database itself is not replayed yet
        assert time.monotonic() < deadline, "the standby never caught up"
        await asyncio.sleep(0.05)


async def turn(store: PostgresStore, session_id: str, turn_id: str) -> None:
    st = await store.begin_turn(
        session_id, turn_id, "q", metadata_patch=None, lease_ms=10_000, window=5, ttl_s=math.inf
    )
    assert isinstance(st, Started)
    n, now = st.message_count, time.time()
    await store.commit_turn(
        st.lease,
        user=Message("user", f"q {turn_id}", turn_id, now, n),
        assistant=Message("assistant", f"a {turn_id}", turn_id, now, n + 1),
        metadata={},
        ttl_s=math.inf,
    )


@pytest.fixture
async def replicated(postgres_pair: Pair) -> AsyncIterator[tuple[PostgresStore, str]]:
    primary, standby = postgres_pair
    url = primary.create_database()
    database = url.rsplit("/", 1)[1]
    store = create_store(url, read_replicas=[standby.url(database) + "?connect_timeout=0.5"])
    assert isinstance(store, PostgresStore)
    await store.open()
    yield store, database
    await store.close()


async def test_reads_come_from_the_replica_unless_it_is_behind_the_callers_min_seq(
    replicated: tuple[PostgresStore, str], postgres_pair: Pair
) -> None:
    store, database = replicated
    _, standby = postgres_pair
    s = f"rep-{uuid.uuid4().hex[:8]}"
    await turn(store, s, "t1")
    await replayed(standby, database, s, 2)
    # The standby stops replaying: what the primary commits now, only the primary has.
    await asyncio.to_thread(standby.sql, "SELECT pg_wal_replay_pause()")
    try:
        await turn(store, s, "t2")
        stale = await store.list_messages(s, 10)
        assert stale is not None and [m.seq for m in stale] == [0, 1], "read from the replica"
        info = await store.get_session(s)
        assert info is not None and info.turns == 1
        fresh = await store.list_messages(s, 10, min_seq=3)
        assert fresh is not None and [m.seq for m in fresh] == [0, 1, 2, 3]
        info = await store.get_session(s, min_seq=3)
        assert info is not None and info.turns == 2
        # A seq the replica has: it answers.
        assert [m.seq for m in await store.list_messages(s, 10, min_seq=1) or []] == [0, 1]
        # A session the replica does not know yet is looked up on the primary.
        new = f"rep-{uuid.uuid4().hex[:8]}"
        await turn(store, new, "t1")
        assert [m.seq for m in await store.list_messages(new, 10) or []] == [0, 1]
    finally:
        await asyncio.to_thread(standby.sql, "SELECT pg_wal_replay_resume()")
    await replayed(standby, database, s, 4)
    assert [m.seq for m in await store.list_messages(s, 10) or []] == [0, 1, 2, 3]


async def test_a_replica_that_is_down_sends_reads_to_the_primary(
    replicated: tuple[PostgresStore, str], postgres_pair: Pair
) -> None:
    store, _ = replicated
    _, standby = postgres_pair
    s = f"rep-{uuid.uuid4().hex[:8]}"
    await turn(store, s, "t1")
    await asyncio.to_thread(standby.stop)
    assert [m.seq for m in await store.list_messages(s, 10) or []] == [0, 1]
    info = await store.get_session(s)
    assert info is not None and info.turns == 1


async def test_a_server_reads_history_from_its_replica_and_honours_min_seq(
    agenthost_factory: Callable[..., AgentHostProcess], postgres_pair: Pair
) -> None:
    primary, standby = postgres_pair
    url = primary.create_database()
    database = url.rsplit("/", 1)[1]
    server = agenthost_factory(store=url, store_read_replica=standby.url(database))
    async with aiohttp.ClientSession() as http:
        base = f"{server.url}/v1/sessions/web"
        async with http.post(f"{base}/turns", json={"message": "one"}) as resp:
            assert resp.status == 200
        await replayed(standby, database, "web", 2)
        await asyncio.to_thread(standby.sql, "SELECT pg_wal_replay_pause()")
        try:
            async with http.post(f"{base}/turns", json={"message": "two"}) as resp:
                assert resp.status == 200
            async with http.get(f"{base}/messages") as resp:
                assert [m["seq"] for m in (await resp.json())["messages"]] == [0, 1]
            async with http.get(f"{base}/messages?min_seq=3") as resp:
                assert [m["seq"] for m in (await resp.json())["messages"]] == [0, 1, 2, 3]
            async with http.get(f"{base}?min_seq=3") as resp:
                assert (await resp.json())["turns"] == 2
            async with http.get(f"{base}/messages?min_seq=-1") as resp:
                assert resp.status == 422
        finally:
            await asyncio.to_thread(standby.sql, "SELECT pg_wal_replay_resume()")
