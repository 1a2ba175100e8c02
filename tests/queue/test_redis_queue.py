"""The Redis queue's own bookkeeping on a single server, on a real redis-server: the
round-robin's list, the mark of a turn alone in its session, and the wake tokens."""

from __future__ import annotations

import asyncio

import pytest

from agenthost.brokers.base import StreamEvent
from agenthost.brokers.redis import RedisBroker
from agenthost.core.errors import StoreUnavailable
from agenthost.queue import Delivery, QueuedTurn, WorkQueue, create_queue
from agenthost.queue.base import Withdrawn
from agenthost.stores.redis import RedisStore
from tests.fixtures.redis import RedisServer, command_calls, port_of, redis_cli


def reads_processed(port: int) -> int:
    """How many reads from its clients the server on `port` has made (requests arriving)."""
    for line in redis_cli(port, "INFO", "stats").splitlines():
        if line.startswith("total_reads_processed:"):
            return int(line.split(":", 1)[1])
    raise AssertionError("no total_reads_processed in INFO stats")


async def past_the_look_for_stopped_turns(queue: WorkQueue) -> None:
    """A first take also looks for stopped turns, the Cluster's way: one turn through it, so
    the next takes are the single server's script."""
    await queue.enqueue(QueuedTurn("z/s0", "t0", "m"))
    [done] = await queue.take("w", 1, wait=0)
    await queue.ack(done)


async def test_a_tenant_leaves_the_round_robin_when_nothing_of_it_is_queued(
    redis_url: str,
) -> None:
    queue = create_queue(redis_url, claim_after=10.0)
    await queue.open()
    try:
        port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        await queue.enqueue(QueuedTurn("acme/s1", "t1", "m"))
        await queue.enqueue(QueuedTurn("acme/s1", "t2", "m"))
        assert redis_cli(port, "SMEMBERS", "ahq:tenants").split() == ["acme"]
        first, second = await queue.take("w", 2, wait=5)
        await queue.ack(first)
        assert redis_cli(port, "SMEMBERS", "ahq:tenants").split() == ["acme"]  # t2 runs
        await queue.ack(second)
        assert redis_cli(port, "SMEMBERS", "ahq:tenants").split() == []
        assert await queue.enqueue(QueuedTurn("acme/s1", "t3", "m"))
        [again] = await queue.take("w", 1, wait=5)
        assert again.turn.turn_id == "t3"
    finally:
        await queue.close()


async def test_an_enqueue_asks_only_what_it_cannot_know(redis_url: str) -> None:
    """A session with nothing queued has no turn of that id queued (no HEXISTS); a tenant
    whose stream holds turns is in the tenants set already (only an empty stream's enqueue
    adds it, and a take still serves every tenant)."""
    queue = create_queue(redis_url, claim_after=10.0)
    await queue.open()
    try:
        port = port_of(redis_url)
        before = {c: command_calls(port, c) for c in ("hexists", "sadd")}
        for n in range(3):
            assert await queue.enqueue(QueuedTurn(f"acme/s{n}", f"t{n}", "m"))
        assert command_calls(port, "hexists") == before["hexists"]
        assert command_calls(port, "sadd") == before["sadd"] + 1  # the first turn's
        assert not await queue.enqueue(QueuedTurn("acme/s0", "t0", "m"))  # queued already
        assert await queue.enqueue(QueuedTurn("acme/s0", "t3", "m"))
        assert command_calls(port, "hexists") == before["hexists"] + 2
        taken: list[Delivery] = []
        while len(taken) < 4:
            taken += await queue.take("w", 4, wait=5)
        for delivery in taken:
            await queue.ack(delivery)
        assert redis_cli(port, "SMEMBERS", "ahq:tenants").split() == []
        assert await queue.enqueue(QueuedTurn("acme/s9", "t9", "m"))  # back in the list
        assert redis_cli(port, "SMEMBERS", "ahq:tenants").split() == ["acme"]
    finally:
        await queue.close()


async def test_a_turn_alone_in_its_session_needs_no_look_up_for_earlier_turns(
    redis_url: str,
) -> None:
    """Marked at enqueue: nothing of its session was queued or running, so no turn of it
    can be earlier, and `earlier` asks Redis nothing for it: the take read its marker (not
    withdrawn) with it."""
    queue = create_queue(redis_url, claim_after=10.0)
    await queue.open()
    try:
        port = port_of(redis_url)
        await past_the_look_for_stopped_turns(queue)
        for turn_id, session in (("t1", "acme/s1"), ("t2", "acme/s1"), ("t3", "acme/s2")):
            await queue.enqueue(QueuedTurn(session, turn_id, "m"))
        taken = {d.turn.turn_id: d for d in await queue.take("w", 3, wait=5)}
        assert {t: d.alone for t, d in taken.items()} == {"t1": True, "t2": False, "t3": True}
        looked_up = command_calls(port, "hgetall"), command_calls(port, "hget")
        assert not await queue.earlier(taken["t1"]) and not await queue.earlier(taken["t3"])
        assert (command_calls(port, "hgetall"), command_calls(port, "hget")) == looked_up
        assert await queue.earlier(taken["t2"])  # t1 still runs
        await queue.ack(taken["t1"])
        await queue.enqueue(QueuedTurn("acme/s1", "t4", "m"))  # t2 still runs
        [t4] = await queue.take("w", 1, wait=5)
        assert not t4.alone and await queue.earlier(t4)
    finally:
        await queue.close()


async def test_a_turn_alone_withdrawn_before_its_take_is_found_withdrawn(
    redis_url: str,
) -> None:
    """The take reads an alone turn's marker with the entry: one withdrawn while a worker
    already held it (the marker gone, the entry left) is found so by `earlier`, as is one
    cancelled after the take (its worker's engine hears the interrupt instead)."""
    queue = create_queue(redis_url, claim_after=10.0)
    await queue.open()
    try:
        port = port_of(redis_url)
        await past_the_look_for_stopped_turns(queue)
        await queue.enqueue(QueuedTurn("acme/s1", "t1", "m"))
        # A Cluster-style withdrawal of a held turn: the marker goes, the entry stays.
        redis_cli(port, "HDEL", "ah:{acme/s1}:queued", "t1")
        [taken] = await queue.take("w", 1, wait=5)
        assert taken.alone and not taken.marked  # read by the script: gone
        with pytest.raises(Withdrawn):
            await queue.earlier(taken)
        await queue.ack(taken)
        await queue.enqueue(QueuedTurn("acme/s2", "t2", "m"))
        [kept] = await queue.take("w", 1, wait=5)
        assert kept.alone and kept.marked and not await queue.earlier(kept)
        await queue.ack(kept)
    finally:
        await queue.close()


async def test_the_acknowledgements_of_one_iteration_are_one_script(redis_url: str) -> None:
    """A worker ends the turns of one take together: their acknowledgements leave as one
    script with one XACK and one XDEL per stream, in the write of that iteration's other
    commands (its turns' endings). Each still waits for the reply."""
    queue = create_queue(redis_url, claim_after=10.0)
    await queue.open()
    try:
        port = port_of(redis_url)
        await past_the_look_for_stopped_turns(queue)
        sessions = ["acme/s1", "acme/s2", "acme/s3", "beta/s1"]
        for n, session in enumerate(sessions):
            await queue.enqueue(QueuedTurn(session, f"t{n}", "m"))
        taken: list[Delivery] = []
        while len(taken) < 4:
            taken += await queue.take("w", 4, wait=5)
        before = {c: command_calls(port, c) for c in ("evalsha", "xack", "xdel", "hdel")}
        await asyncio.gather(*(queue.ack(delivery) for delivery in taken))
        after = {c: command_calls(port, c) for c in before}
        assert {c: after[c] - before[c] for c in before} == {
            "evalsha": 1, "xack": 2, "xdel": 2, "hdel": 4,
        }  # fmt: skip
        assert redis_cli(port, "SMEMBERS", "ahq:tenants").split() == []
        assert [await queue.is_queued(s, f"t{n}") for n, s in enumerate(sessions)] == [False] * 4
        assert int(redis_cli(port, "XLEN", "ahq:{t:acme}:turns")) == 0
    finally:
        await queue.close()


async def test_an_acknowledgement_fails_as_a_store_outage_when_the_connection_does(
    redis_server: RedisServer,
) -> None:
    """Sent as its iteration's commands leave: a connection that fails first fails it (the
    worker logs it; the turn is delivered again and answered from its record)."""
    queue = create_queue(redis_server.url, claim_after=10.0)
    await queue.open()
    try:
        redis_server.flushall()
        await past_the_look_for_stopped_turns(queue)
        await queue.enqueue(QueuedTurn("acme/s1", "t1", "m"))
        [delivery] = await queue.take("w", 1, wait=5)
        acking = asyncio.ensure_future(queue.ack(delivery))
        await asyncio.sleep(0)  # asked for: waiting for the iteration's write
        assert queue._wire is not None
        await queue._wire.close()  # the connection fails before the write
        with pytest.raises(StoreUnavailable):
            await acking
        await queue.ack(delivery)  # a new connection: the script is sent on it
        assert not await queue.is_queued("acme/s1", "t1")
    finally:
        await queue.close()


async def test_wake_tokens_left_by_turns_already_taken_cost_one_empty_take(
    redis_url: str,
) -> None:
    """Each enqueue pushes a wake token; turns taken while the worker was not waiting leave
    theirs behind. A waiting take pops as many as it has free slots at once, so it does not
    spin through one empty take per stale token."""
    queue = create_queue(redis_url, claim_after=10.0)
    await queue.open()
    try:
        port = port_of(redis_url)
        for n in range(50):
            await queue.enqueue(QueuedTurn(f"acme/s{n}", f"t{n}", "m"))
        taken: list[Delivery] = []
        while len(taken) < 50:
            taken += await queue.take("w", 100, wait=5)
        for delivery in taken:
            await queue.ack(delivery)
        assert int(redis_cli(port, "LLEN", "ahq:wake")) >= 49  # stale: their turns are gone
        passes = command_calls(port, "smembers")
        assert await queue.take("w", 100, wait=1.0) == []
        assert command_calls(port, "smembers") - passes <= 3
    finally:
        await queue.close()


async def test_a_take_is_one_script_serving_the_tenants_round_robin(redis_url: str) -> None:
    """On a single server the tenant list and the round-robin's reads are one script (one
    round trip); the passes give one turn per tenant each, the unauthenticated tenant too."""
    queue = create_queue(redis_url, claim_after=100.0)
    await queue.open()
    try:
        port = port_of(redis_url)
        await queue.enqueue(QueuedTurn("z/s0", "t0", "m"))
        [done] = await queue.take("w", 1, wait=0)  # with the look for stopped turns
        await queue.ack(done)
        assert await queue.take("w", 1, wait=0) == []  # the script, loaded
        for n, session in enumerate(["a/s1", "a/s2", "a/s3", "b/s1", "b/s2", "s", "s2"], 1):
            await queue.enqueue(QueuedTurn(session, f"t{n}", "m"))
        idle = -reads_processed(port) + reads_processed(port)  # the look itself costs this
        lists, reads = command_calls(port, "smembers"), command_calls(port, "xreadgroup")
        requests = reads_processed(port)
        first = await queue.take("w", 4, wait=0)
        assert reads_processed(port) - requests - idle == 1  # one round trip
        assert command_calls(port, "smembers") - lists == 1
        assert command_calls(port, "xreadgroup") - reads == 2  # two passes, each gave
        by_tenant = [d.turn.tenant for d in first]
        assert sorted(set(by_tenant[:3])) == ["", "a", "b"]  # the first pass: one each
        assert len(first) == 4 and max(map(by_tenant.count, ("", "a", "b"))) == 2
        rest = await queue.take("w", 10, wait=0)
        assert sorted(d.turn.turn_id for d in first + rest) == [f"t{n}" for n in range(1, 8)]
        for delivery in first + rest:
            await queue.ack(delivery)
    finally:
        await queue.close()


async def test_a_take_after_one_that_emptied_the_queue_waits_before_it_looks(
    redis_url: str,
) -> None:
    """A take that got fewer turns than it asked for left none behind: the next one waits
    for a wake token first instead of asking for the tenant list and reading again."""
    queue = create_queue(redis_url, claim_after=10.0)
    await queue.open()
    try:
        port = port_of(redis_url)
        await queue.enqueue(QueuedTurn("acme/s1", "t1", "m"))
        [first] = await queue.take("w", 2, wait=5)  # its token stays: it did not wait
        passes = command_calls(port, "smembers")
        # The stale token wakes it once; then it waits out the rest: two looks, not three.
        assert await queue.take("w", 2, wait=0.5) == []
        assert command_calls(port, "smembers") - passes == 2
        await queue.enqueue(QueuedTurn("acme/s2", "t2", "m"))
        [second] = await queue.take("w", 2, wait=5)  # woken at once by its token
        assert second.turn.turn_id == "t2"
        for delivery in (first, second):
            await queue.ack(delivery)
    finally:
        await queue.close()


async def test_the_queue_store_and_broker_of_a_process_share_one_connection(
    redis_url: str,
) -> None:
    """Their commands of one loop iteration leave in one write (`RedisSettings.wire`): one
    connection for the three, beside the store's pub/sub (and the blocking waits, none
    here). On a database of its own, so no other test's connection is counted."""
    port = port_of(redis_url)
    url = redis_url.rsplit("/", 1)[0] + "/7"
    store, broker = RedisStore(url), RedisBroker(url)
    queue = create_queue(url, claim_after=10.0)
    for part in (store, broker, queue):
        await part.open()
    try:
        await queue.enqueue(QueuedTurn("s1", "t1", "m"))
        assert await store.get_session("s1") is None
        await broker.publish("s1", "t1", StreamEvent(1, "done", b"{}"))
        listed = redis_cli(port, "CLIENT", "LIST").splitlines()
        ours = [c for c in listed if " db=7 " in c and " flags=N " in c]
        assert len(ours) == 1, listed
        assert " cmd=expire " in ours[0]  # the broker's last command, after the others'
    finally:
        for part in (queue, broker, store):
            await part.close()
