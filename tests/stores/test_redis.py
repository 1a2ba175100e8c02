"""What the Redis backends promise beyond the shared contract: layout, TTLs, round trips,
and behaviour while the server is down."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from agenthost.connections.redis import RedisSettings
from agenthost.connections.redis_commands import IF_ZERO, Command
from agenthost.connections.redis_wire import ReplyError
from agenthost.core.errors import LeaseLost, StoreUnavailable
from agenthost.stores import Message, SessionStore, Started, TurnError, create_store
from agenthost.stores.base import Lease
from agenthost.stores.redis import RedisStore
from tests.fixtures.agenthost import free_port
from tests.fixtures.redis import REDIS_SERVER, RedisCluster, RedisServer


def sid() -> str:
    return f"r-{uuid.uuid4().hex[:12]}"


def text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key


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


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str) -> float:
    """Poll `check` until it is true; the seconds it took. Fails after `within` seconds."""
    start = time.monotonic()
    while True:
        try:
            if await check():
                return time.monotonic() - start
        except StoreUnavailable:
            pass
        assert time.monotonic() - start < within, f"not {what} within {within} s"
        await asyncio.sleep(0.02)


async def one_turn(
    store: SessionStore,
    session_id: str,
    turn_id: str,
    ttl_s: float = 60,
    state: bytes | None = None,
    then: Sequence[Command] = (),
) -> Lease:
    """Begin and commit a turn; the lease it committed under."""
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
        state=state,
        then=then,
    )
    return st.lease


async def test_every_key_of_a_session_shares_the_ttl_and_the_hash_tag(
    store: RedisStore, raw: aioredis.Redis
) -> None:
    s = sid()
    await one_turn(store, s, "t1", ttl_s=100)
    running = await store.begin_turn(
        s, "t2", "q", metadata_patch=None, lease_ms=5000, window=10, ttl_s=100
    )
    assert isinstance(running, Started)
    keys = sorted(text(k) for k in await raw.keys(f"ah:{{{s}}}:*"))
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


async def test_commit_is_refused_when_the_session_expired_under_a_live_lease(
    store: RedisStore, raw: aioredis.Redis
) -> None:
    s = sid()
    st = await store.begin_turn(
        s, "t1", "q", metadata_patch=None, lease_ms=10_000, window=10, ttl_s=0.2
    )
    assert isinstance(st, Started)

    async def expired() -> bool:
        return await store.get_session(s) is None

    await eventually(expired, 5, "expired")
    with pytest.raises(LeaseLost):
        await store.commit_turn(
            st.lease,
            user=Message("user", "q", "t1", time.time(), 0),
            assistant=Message("assistant", "a", "t1", time.time(), 1),
            metadata={},
            ttl_s=60,
        )
    assert await store.fail_turn(st.lease, TurnError("agent_error", "x"), 60) is None
    # Only the lease is left, and it expires by itself: nothing was written.
    assert [text(k) for k in await raw.keys(f"ah:{{{s}}}:*")] == [f"ah:{{{s}}}:lease"]


async def test_a_failed_record_keeps_its_stored_fields_exactly(
    store: RedisStore, raw: aioredis.Redis
) -> None:
    s = sid()
    st = await store.begin_turn(
        s, "t1", 'a "quoted", \\ "status":"completed" message', metadata_patch=None,
        lease_ms=5000, window=10, ttl_s=60,
    )  # fmt: skip
    assert isinstance(st, Started)
    before = await store.get_turn(s, "t1")
    assert before is not None and before.status == "running"
    failed = await store.fail_turn(st.lease, TurnError("interrupted", 'cut "short"'), 60)
    assert failed is not None
    after = await store.get_turn(s, "t1")
    assert after == failed
    assert after.status == "failed" and after.response is None
    assert after.error == TurnError("interrupted", 'cut "short"')
    assert (after.message, after.created_at) == (before.message, before.created_at)
    assert after.updated_at >= before.updated_at
    # A failed turn is retried, not answered from the record.
    again = await store.begin_turn(
        s, "t1", "q", metadata_patch=None, lease_ms=5000, window=10, ttl_s=60
    )
    assert isinstance(again, Started) and again.lease.fence == st.lease.fence + 1


async def test_pubsub_survives_a_redis_restart(durable_redis: RedisServer) -> None:
    """Interrupts and release wake-ups reach other processes again after Redis restarts."""
    listener, other = RedisStore(durable_redis.url), RedisStore(durable_redis.url)
    await listener.open()
    await other.open()
    heard: list[tuple[str, str]] = []
    listener.on_interrupt(lambda s, t: heard.append((s, t)))
    try:
        s = sid()
        st = await other.begin_turn(
            s, "t1", "q", metadata_patch=None, lease_ms=30_000, window=10, ttl_s=60
        )
        assert isinstance(st, Started)
        waiter = asyncio.create_task(listener.wait_for_release(s, 30))

        async def listening() -> bool:
            reply = await other._command("PUBSUB", "SHARDNUMSUB", f"ah:{{{s}}}:released")
            return bool(reply[1])

        await eventually(listening, 5, "subscribed")
        durable_redis.stop()
        durable_redis.start()
        restarted = time.monotonic()

        async def interrupted() -> bool:
            await other.request_interrupt(s, "t1")
            # The callback runs on the listener's reader task: give it a moment per try.
            await asyncio.sleep(0.05)
            return (s, "t1") in heard

        await eventually(interrupted, 2, "interrupts heard again")
        assert time.monotonic() - restarted < 2.0
        # The waiter may wake early (a wake-up on reconnect is allowed); once the lease is
        # released it must have returned, well before its 30 s timeout.
        if not waiter.done():
            await eventually(listening, 2, "resubscribed")
        assert await other.release_lease(st.lease)
        await asyncio.wait_for(waiter, 2)
        assert waiter.done() and waiter.exception() is None
    finally:
        await listener.close()
        await other.close()


async def test_cluster_keeps_a_session_on_one_slot(redis_cluster: RedisCluster) -> None:
    store = create_store(redis_cluster.url)
    await store.open()
    nodes = [aioredis.Redis(host="127.0.0.1", port=n.port) for n in redis_cluster.nodes]
    try:
        sessions = [sid() for _ in range(20)]
        for s in sessions:
            await one_turn(store, s, "t1")
            running = await store.begin_turn(
                s, "t2", "q", metadata_patch=None, lease_ms=5000, window=10, ttl_s=60
            )
            assert isinstance(running, Started)
        owners: set[int] = set()
        for s in sessions:
            holders = {}
            for i, node in enumerate(nodes):
                found = await node.keys(f"ah:{{{s}}}:*")
                if found:
                    holders[i] = len(found)
            # All four keys (meta, msgs, turns, lease) live on one master.
            assert list(holders.values()) == [4], holders
            owners |= holders.keys()
        # Twenty sessions spread over the masters rather than piling on one.
        assert len(owners) > 1
    finally:
        for node in nodes:
            await node.aclose()
        await store.close()


async def test_cluster_down_fails_fast_and_recovers(redis_cluster: RedisCluster) -> None:
    store = create_store(redis_cluster.url)
    await store.open()
    try:
        s = sid()
        await one_turn(store, s, "t1")
        redis_cluster.stop()
        t0 = time.monotonic()
        for call in (
            store.ping(),
            store.get_session(s),
            store.begin_turn(s, "t2", "q", metadata_patch=None, lease_ms=5000, window=10,
                             ttl_s=60),
        ):  # fmt: skip
            with pytest.raises(StoreUnavailable):
                await call
        assert time.monotonic() - t0 < 3.0
        redis_cluster.restart()  # returns once every node reports cluster_state:ok

        async def serving() -> bool:
            await store.ping()
            return await store.get_session(s) is None  # no persistence: the data is gone

        took = await eventually(serving, 2, "serving again")
        assert took < 2.0
        await one_turn(store, s, "t3")
        assert (info := await store.get_session(s)) is not None and info.turns == 1
    finally:
        redis_cluster.restart()
        await store.close()


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A redis-server of this test alone that speaks only TLS and wants a password:
    (port, CA file). Its certificate is self-signed for 127.0.0.1."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        [REDIS_SERVER, "--bind", "127.0.0.1", "--port", "0", "--tls-port", str(port),
         "--tls-cert-file", str(cert), "--tls-key-file", str(key),
         "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
         "--requirepass", "s3cret/pw", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    yield port, cert
    proc.terminate()
    proc.wait(10)


async def test_rediss_with_a_password_in_the_url(tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    # The password has a '/', so it is percent-encoded in the URL.
    url = f"rediss://:s3cret%2Fpw@127.0.0.1:{port}/0?ssl_ca_certs={ca}"
    store = create_store(url)
    await store.open()
    wrong = create_store(f"rediss://:nope@127.0.0.1:{port}/0?ssl_ca_certs={ca}")
    await wrong.open()
    try:

        async def up() -> bool:
            await store.ping()
            return True

        await eventually(up, 10, "the TLS server answering")
        heard: list[tuple[str, str]] = []
        store.on_interrupt(lambda s, t: heard.append((s, t)))
        s = sid()
        await one_turn(store, s, "t1")
        info = await store.get_session(s)
        assert info is not None and info.turns == 1

        async def interrupted() -> bool:  # pub/sub runs over TLS with the password too
            await store.request_interrupt(s, "t1")
            await asyncio.sleep(0.05)
            return (s, "t1") in heard

        await eventually(interrupted, 5, "the interrupt heard")
        with pytest.raises(StoreUnavailable):
            await wrong.ping()
    finally:
        await wrong.close()
        await store.close()


async def test_a_light_client_takes_its_timeouts_from_the_url() -> None:
    default = RedisSettings.from_url("redis://127.0.0.1:1/0").light_client()
    tuned = RedisSettings.from_url(
        "redis://127.0.0.1:1/0?socket_timeout=0.5&connect_timeout=0.25"
    ).light_client()
    try:
        assert default.connection_pool.connection_kwargs["socket_timeout"] == 2.0
        kwargs = tuned.connection_pool.connection_kwargs
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.5, 0.25)
    finally:
        await default.aclose()
        await tuned.aclose()


async def test_a_command_sent_without_waiting_hands_its_reply_or_failure_to_a_callback(
    durable_redis: RedisServer,
) -> None:
    wire = RedisSettings.from_url(durable_redis.url).wire(timeout=2.0)
    replies: list[Any] = []
    try:
        assert not wire.call_nowait("PING", on_reply=replies.append)  # not connected yet
        await wire.call("SET", "wire:text", "not a number")
        assert wire.connected
        assert wire.call_nowait("PING", on_reply=replies.append)
        assert wire.call_nowait("INCR", "wire:text", on_reply=replies.append)
        assert await wire.call("PING") == b"PONG"  # replies come in order: ours are in
        assert replies[0] == b"PONG" and isinstance(replies[1], ReplyError)
        durable_redis.stop()
        assert wire.call_nowait("PING", on_reply=replies.append)  # the loss is not known yet

        def failed() -> bool:
            return len(replies) == 3

        deadline = time.monotonic() + 5
        while not failed():
            assert time.monotonic() < deadline, "the lost reply was never reported"
            await asyncio.sleep(0.01)
        assert isinstance(replies[2], StoreUnavailable)
    finally:
        await wire.close()


async def test_a_commit_runs_the_commands_it_is_given_once_it_succeeded_and_only_then(
    store: RedisStore, raw: aioredis.Redis
) -> None:
    """`then`: what another part of the process does once a turn is committed (a queued
    turn's acknowledgement, its ending) runs in the commit's script; a conditional command
    runs only after a reply of 0; a refused commit runs none of them."""
    s = sid()
    assert store.runs_after_commit(store._wire) and not store.runs_after_commit(object())
    then = [
        ("RPUSH", f"then:{s}", "ended"),
        ("LLEN", f"then:{s}:none"),  # 0: the next one runs
        (IF_ZERO, "SET", f"then:{s}:empty", "1"),
        ("LLEN", f"then:{s}"),  # 1: the next one does not
        (IF_ZERO, "SET", f"then:{s}:never", "1"),
    ]
    await one_turn(store, s, "t1", then=then)
    lease = await one_turn(store, s, "t2", state=b"kept", then=then[:1])
    assert await raw.lrange(f"then:{s}", 0, -1) == [b"ended", b"ended"]
    assert await raw.get(f"then:{s}:empty") == b"1"
    assert await raw.exists(f"then:{s}:never") == 0
    assert await raw.hget(f"ah:{{{s}}}:meta", "state") == b"kept"
    # A stale lease's commit is refused, and runs nothing.
    with pytest.raises(LeaseLost):
        await store.commit_turn(
            lease,
            user=Message("user", "q", "t2", time.time(), 4),
            assistant=Message("assistant", "a", "t2", time.time(), 5),
            metadata={},
            ttl_s=60,
            then=[("RPUSH", f"then:{s}", "stale")],
        )
    assert await raw.llen(f"then:{s}") == 2
