"""A plain turn queued by an `api` process (`TurnService` with a queue), in-process on a real
redis-server, with the test standing in for the worker: the turn names the api's inbox, and
an ending that never arrives costs its waiter a look at the turn record, not the answer."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest

from agenthost.brokers import StreamBroker, StreamEvent, create_broker
from agenthost.core.errors import TurnInterrupted
from agenthost.llm import create_llm
from agenthost.observability.metrics import Metrics
from agenthost.queue import Delivery, WorkQueue, create_queue
from agenthost.ratelimit import create_limiter
from agenthost.ratelimit.gate import TurnGate
from agenthost.stores import create_store
from agenthost.turns.agents import Turn, wrap_agent
from agenthost.turns.chunks import ChunkFlusher
from agenthost.turns.engine import TurnEngine
from agenthost.turns.payloads import ErrorDetail
from agenthost.turns.service import TurnService
from agenthost.turns.worker import TurnWorker


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


async def _after_a_look_at_the_record(
    service: TurnService, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """Count the waiter's looks at turn records; the list grows with each."""
    looks: list[str] = []
    get_turn = service.store.get_turn

    async def counted(session_id: str, turn_id: str) -> Any:
        looks.append(turn_id)
        return await get_turn(session_id, turn_id)

    monkeypatch.setattr(service.store, "get_turn", counted)
    return looks


async def _poll(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.02)


async def test_an_ending_sent_after_the_waiter_looked_at_the_record_still_answers(
    api: tuple[TurnService, WorkQueue, StreamBroker], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The waiter goes on waiting for the ending after each look at the record: a turn
    that ends with no record (withdrawn before it ran) is answered by its ending alone."""
    service, queue, broker = api
    looks = await _after_a_look_at_the_record(service, monkeypatch)
    sid = f"s-{uuid.uuid4().hex[:8]}"
    answer = asyncio.ensure_future(service.run(sid, "hi", turn_id=None))
    [delivery] = await queue.take("stand-in-worker", 1, wait=10)
    await _poll(lambda: len(looks) >= 2)  # two looks: the wait was renewed twice
    error = msgspec.json.encode(ErrorDetail("interrupted", "cancelled before it ran"))
    broker.notify_end(broker.inbox, sid, delivery.turn.turn_id, StreamEvent(1, "error", error))
    with pytest.raises(TurnInterrupted):
        await asyncio.wait_for(answer, 20)
    assert len(broker.endings) == 0  # nobody waits any more
    await queue.ack(delivery)


async def test_a_waiter_cancelled_between_looks_at_the_record_stops_and_leaves_no_wait(
    api: tuple[TurnService, WorkQueue, StreamBroker], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, queue, broker = api
    looks = await _after_a_look_at_the_record(service, monkeypatch)
    sid = f"s-{uuid.uuid4().hex[:8]}"
    answer = asyncio.ensure_future(service.run(sid, "hi", turn_id=None))
    [delivery] = await queue.take("stand-in-worker", 1, wait=10)
    await _poll(lambda: len(looks) >= 1)
    answer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await answer
    assert len(broker.endings) == 0
    await queue.ack(delivery)


@pytest.fixture
async def api_and_worker(
    redis_url: str,
) -> AsyncIterator[tuple[TurnService, TurnWorker, WorkQueue]]:
    """An api process's service and a worker in one loop, each with a broker and a queue
    of its own (their inboxes differ) on one Redis server and its one shared client."""
    store = create_store(redis_url)
    api_broker, worker_broker = create_broker(redis_url), create_broker(redis_url)
    api_queue, worker_queue = (create_queue(redis_url, claim_after=10.0) for _ in range(2))
    parts = (store, api_broker, worker_broker, api_queue, worker_queue)
    for part in parts:
        await part.open()
    engine = TurnEngine(store, wrap_agent(echo), create_llm("sim://"), lease_ttl=1.0)
    gate = TurnGate(create_limiter("memory://", hold_s=10.0), Metrics())
    service = TurnService(engine, api_broker, gate, ChunkFlusher(0.0), api_queue)
    worker = TurnWorker(engine, worker_broker, worker_queue, ChunkFlusher(0.0), concurrency=4)
    yield service, worker, api_queue
    await worker.stop()
    for part in reversed(parts):
        await part.close()


async def test_a_plain_turns_acknowledgement_and_ending_ride_in_its_commit(
    api_and_worker: tuple[TurnService, TurnWorker, WorkQueue], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain turn whose id the api process made ends in its commit's own script, on a
    single server where store, queue and broker share one client: the worker sends no
    acknowledgement and no ending of its own. A turn whose client named it is acknowledged
    step by step (its final event goes to its stream first)."""
    service, worker, api_queue = api_and_worker
    store, worker_queue, worker_broker = service.store, worker.queue, worker.broker
    acked: list[str] = []
    ack = worker_queue.ack

    async def counted_ack(delivery: Delivery) -> None:
        acked.append(delivery.turn.turn_id)
        await ack(delivery)

    monkeypatch.setattr(worker_queue, "ack", counted_ack)
    notify_end = worker_broker.notify_end
    told: list[str] = []

    def counted_notify(inbox: str, session_id: str, turn_id: str, event: StreamEvent) -> None:
        told.append(turn_id)
        notify_end(inbox, session_id, turn_id, event)

    monkeypatch.setattr(worker_broker, "notify_end", counted_notify)
    worker.start()
    sid = f"s-{uuid.uuid4().hex[:8]}"
    record = await asyncio.wait_for(service.run(sid, "hi", turn_id=None), 20)
    assert record.response == "echo: hi"
    assert (acked, told) == ([], [])
    assert not await api_queue.is_queued(sid, record.turn_id)
    stored = await store.get_turn(sid, record.turn_id)
    assert stored is not None and stored.status == "completed"
    named = await asyncio.wait_for(service.run(sid, "again", turn_id="named-1"), 20)
    assert named.response == "echo: again"
    assert (acked, told) == (["named-1"], ["named-1"])
    # Its acknowledgement leaves right after its ending, in the same write.
    deadline = time.monotonic() + 10
    while await api_queue.is_queued(sid, "named-1"):
        assert time.monotonic() < deadline, "never acknowledged"
        await asyncio.sleep(0.02)


async def test_a_turn_id_the_api_process_made_is_no_idempotency_key(
    api_and_worker: tuple[TurnService, TurnWorker, WorkQueue],
) -> None:
    """As with `--role all`, a plain turn sent without a key is recorded with no request
    fingerprint (no client can send its id again); a client's key names its request."""
    service, worker, _ = api_and_worker
    worker.start()
    sid = f"s-{uuid.uuid4().hex[:8]}"
    made = await asyncio.wait_for(service.run(sid, "hi", turn_id=None), 20)
    await asyncio.wait_for(service.run(sid, "again", turn_id="named-1"), 20)
    records = [await service.store.get_turn(sid, tid) for tid in (made.turn_id, "named-1")]
    assert [r.fingerprint != "" for r in records if r is not None] == [False, True]
