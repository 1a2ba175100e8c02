"""A plain turn queued by an `api` process (`TurnService` with a queue), in-process on a real
redis-server, with the test standing in for the worker: the turn names the api's inbox, and
an ending that never arrives costs its waiter a look at the turn record, not the answer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from agenthost.brokers import StreamBroker, create_broker
from agenthost.llm import create_llm
from agenthost.observability.metrics import Metrics
from agenthost.queue import WorkQueue, create_queue
from agenthost.ratelimit import create_limiter
from agenthost.ratelimit.gate import TurnGate
from agenthost.stores import create_store
from agenthost.turns.agents import Turn, wrap_agent
from agenthost.turns.chunks import ChunkFlusher
from agenthost.turns.engine import TurnEngine
from agenthost.turns.service import TurnService


async def echo(turn: Turn) -> str:
    return f"echo: {turn.message}"


@pytest.fixture
async def api(redis_url: str) -> AsyncIterator[tuple[TurnService, WorkQueue, StreamBroker]]:
    store = create_store("memory://")
    broker = create_broker(redis_url)
    queue = create_queue(redis_url, claim_after=10.0)
    for part in (store, broker, queue):
        await part.open()
    # lease_ttl 1 s: the waiter looks at the record every second.
    engine = TurnEngine(store, wrap_agent(echo), create_llm("sim://"), lease_ttl=1.0)
    gate = TurnGate(create_limiter("memory://", hold_s=10.0), Metrics())
    yield TurnService(engine, broker, gate, ChunkFlusher(0.0), queue), queue, broker
    for part in (queue, broker, store):
        await part.close()


async def test_a_plain_turn_whose_ending_is_lost_is_answered_from_its_record(
    api: tuple[TurnService, WorkQueue, StreamBroker],
) -> None:
    service, queue, broker = api
    sid = f"s-{uuid.uuid4().hex[:8]}"
    answer = asyncio.ensure_future(service.run(sid, "hi", turn_id=None))
    [delivery] = await queue.take("stand-in-worker", 1, wait=10)
    assert delivery.turn.reply_to == broker.inbox and not delivery.turn.streamed
    # The worker's part, but its ending never reaches the api (a Redis restart, say).
    record = await service.engine.run_turn(sid, "hi", turn_id=delivery.turn.turn_id, attach=True)
    await queue.ack(delivery)
    got = await asyncio.wait_for(answer, 20)
    assert (got.turn_id, got.response) == (record.turn_id, "echo: hi")
