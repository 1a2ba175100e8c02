"""The Redis queue's own bookkeeping on a single server, on a real redis-server: the
round-robin's list, the mark of a turn alone in its session, and the wake tokens."""

from __future__ import annotations

from agenthost.queue import Delivery, QueuedTurn, create_queue
from tests.fixtures.redis import command_calls, port_of, redis_cli


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


async def test_a_turn_alone_in_its_session_needs_no_look_up_for_earlier_turns(
    redis_url: str,
) -> None:
    """Marked at enqueue: nothing of its session was queued or running, so no turn of it
    can be earlier, and `earlier` asks Redis nothing for it."""
    queue = create_queue(redis_url, claim_after=10.0)
    await queue.open()
    try:
        port = port_of(redis_url)
        for turn_id, session in (("t1", "acme/s1"), ("t2", "acme/s1"), ("t3", "acme/s2")):
            await queue.enqueue(QueuedTurn(session, turn_id, "m"))
        taken = {d.turn.turn_id: d for d in await queue.take("w", 3, wait=5)}
        assert {t: d.alone for t, d in taken.items()} == {"t1": True, "t2": False, "t3": True}
        looked_up = command_calls(port, "hgetall")
        assert not await queue.earlier(taken["t1"]) and not await queue.earlier(taken["t3"])
        assert command_calls(port, "hgetall") == looked_up
        assert await queue.earlier(taken["t2"])  # t1 still runs
        await queue.ack(taken["t1"])
        await queue.enqueue(QueuedTurn("acme/s1", "t4", "m"))  # t2 still runs
        [t4] = await queue.take("w", 1, wait=5)
        assert not t4.alone and await queue.earlier(t4)
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
