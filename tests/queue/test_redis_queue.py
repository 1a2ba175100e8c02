"""The Redis queue's own bookkeeping on a single server, on a real redis-server."""

from __future__ import annotations

from agenthost.queue import QueuedTurn, create_queue
from tests.fixtures.redis import redis_cli


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
