"""The `queues` fixture: a factory of opened work queues of one backend, so the conformance
suite runs against every backend (each queue made by it is one worker's or api's own)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from agenthost.queue import WorkQueue, create_queue

BACKENDS = ["redis", "redis-cluster", "postgres"]

QueueFactory = Callable[..., Awaitable[WorkQueue]]


@pytest.fixture(params=BACKENDS)
async def queues(request: pytest.FixtureRequest) -> AsyncIterator[QueueFactory]:
    fixture = {"redis": "redis_url", "redis-cluster": "redis_cluster_url",
               "postgres": "postgres_url"}[request.param]  # fmt: skip
    url: str = request.getfixturevalue(fixture)
    opened: list[WorkQueue] = []

    async def make(claim_after: float = 10.0, max_queued: int = 0) -> WorkQueue:
        queue = create_queue(url, claim_after=claim_after, max_queued=max_queued)
        await queue.open()
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        await queue.close()
