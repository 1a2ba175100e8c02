"""What every work queue backend guarantees (agenthost.queue.base), on real servers."""

from __future__ import annotations

import asyncio
import time
import uuid

import msgspec
import pytest

from agenthost.core.errors import QueueFull, SessionBusy
from agenthost.queue import Delivery, QueuedTurn, WorkQueue
from agenthost.queue.base import Withdrawn
from tests.fixtures.agenthost import async_wait_until
from tests.queue.conftest import QueueFactory


def turn(tenant: str = "acme", session: str | None = None, n: int = 0) -> QueuedTurn:
    sid = f"{tenant}/{session or uuid.uuid4().hex[:8]}" if tenant else session or "s"
    return QueuedTurn(sid, f"t{n}-{uuid.uuid4().hex[:6]}", f"message {n}")


async def test_a_queued_turn_is_taken_once_and_gone_when_acknowledged(
    queues: QueueFactory,
) -> None:
    api, worker = await queues(), await queues()
    queued = turn()
    assert await api.enqueue(queued)
    assert await api.is_queued(queued.session_id, queued.turn_id)
    assert (await api.stats()).depth == 1
    [delivery] = await worker.take("w1", 5, wait=5)
    assert delivery.turn.turn_id == queued.turn_id
    assert delivery.turn.message == queued.message and delivery.attempt == 1
    assert await worker.take("w2", 5, wait=0) == []  # taken: nobody else gets it
    await worker.ack(delivery)
    assert not await api.is_queued(queued.session_id, queued.turn_id)
    assert (await api.stats()).depth == 0


async def test_the_same_turn_id_is_queued_once(queues: QueueFactory) -> None:
    queue = await queues()
    queued = turn()
    assert await queue.enqueue(queued)
    assert not await queue.enqueue(queued)
    assert len(await queue.take("w", 5, wait=1)) == 1


async def test_a_tenant_past_its_limit_is_refused_and_others_are_not(
    queues: QueueFactory,
) -> None:
    queue = await queues(max_queued=2)
    await queue.enqueue(turn("busy"))
    await queue.enqueue(turn("busy"))
    with pytest.raises(QueueFull) as refused:
        await queue.enqueue(turn("busy"))
    assert refused.value.status == 429
    assert await queue.enqueue(turn("quiet"))


async def test_tenants_are_served_round_robin(queues: QueueFactory) -> None:
    queue = await queues()
    for n in range(30):
        await queue.enqueue(turn("flood", n=n))
    lone = turn("lone")
    await queue.enqueue(lone)
    first_two = [d.turn.turn_id for d in await queue.take("w", 1, 5) + await queue.take("w", 1, 5)]
    assert lone.turn_id in first_two
    rest = await queue.take("w", 100, 1)
    assert len(rest) == 29


async def test_the_oldest_turn_of_a_tenant_goes_first(queues: QueueFactory) -> None:
    queue = await queues()
    queued = [turn("acme", n=n) for n in range(5)]
    for each in queued:
        await queue.enqueue(each)
    taken: list[Delivery] = []
    while len(taken) < 5:
        taken += await queue.take("w", 1, wait=5)
    assert [d.turn.turn_id for d in taken] == [q.turn_id for q in queued]


async def test_a_turn_whose_worker_stopped_is_delivered_to_another(
    queues: QueueFactory,
) -> None:
    first, second = await queues(claim_after=0.5), await queues(claim_after=0.5)
    await first.enqueue(turn())
    [gone] = await first.take("dead-worker", 1, wait=5)
    taken: list[Delivery] = []

    async def take() -> None:
        taken.extend(await second.take("live-worker", 1, wait=0.5))

    deadline = time.monotonic() + 30
    while not taken and time.monotonic() < deadline:
        await take()
    assert [d.turn.turn_id for d in taken] == [gone.turn.turn_id]
    assert taken[0].attempt > 1


async def test_a_touched_turn_stays_with_its_worker(queues: QueueFactory) -> None:
    first, second = await queues(claim_after=2.0), await queues(claim_after=2.0)
    await first.enqueue(turn())
    held = await first.take("alive", 1, wait=5)
    until = time.monotonic() + 4.0
    while time.monotonic() < until:
        await first.touch("alive", held)
        assert await second.take("other", 1, wait=0.2) == []


async def test_a_turn_handed_back_is_taken_by_another_at_once(queues: QueueFactory) -> None:
    first, second = await queues(claim_after=30.0), await queues(claim_after=30.0)
    await first.enqueue(turn())
    [delivery] = await first.take("draining", 1, wait=5)
    await first.release("draining", delivery)
    again = await second.take("fresh", 1, wait=10)
    assert [d.turn.turn_id for d in again] == [delivery.turn.turn_id]


async def test_a_waiting_take_wakes_when_a_turn_is_queued(queues: QueueFactory) -> None:
    api, worker = await queues(), await queues()
    waiting = asyncio.ensure_future(worker.take("w", 1, wait=30))
    await asyncio.sleep(0)  # the take is waiting
    started = time.monotonic()
    await api.enqueue(turn())
    await async_wait_until(waiting.done, 20, "the waiting take to return")
    assert len(waiting.result()) == 1
    assert time.monotonic() - started < 20


async def test_stats_count_queued_turns_and_the_oldest_age(queues: QueueFactory) -> None:
    queue = await queues()
    assert (await queue.stats()).depth == 0
    await queue.enqueue(turn("a"))
    await queue.enqueue(turn("b"))
    await queue.enqueue(turn(""))
    stats = await queue.stats()
    assert stats.depth == 3 and stats.oldest_age_s >= 0
    # Per tenant ("" unauthenticated): the oldest age of each, the fleet-wide one their max.
    assert set(stats.oldest_age_by_tenant) == {"a", "b", ""}
    assert max(stats.oldest_age_by_tenant.values()) == stats.oldest_age_s


async def test_a_sessions_earlier_turn_is_known_until_acknowledged(queues: QueueFactory) -> None:
    queue = await queues()
    first, second = turn("acme", "s1", 1), turn("acme", "s1", 2)
    other = turn("acme", "s2", 3)
    for each in (first, second, other):
        await queue.enqueue(each)
    taken: list[Delivery] = []
    while len(taken) < 3:
        taken += await queue.take("w", 3, wait=5)
    by_id = {d.turn.turn_id: d for d in taken}
    assert await queue.earlier(by_id[second.turn_id])
    assert not await queue.earlier(by_id[first.turn_id])
    assert not await queue.earlier(by_id[other.turn_id])
    await queue.ack(by_id[first.turn_id])
    assert not await queue.earlier(by_id[second.turn_id])


async def take_all(queue: WorkQueue, count: int) -> list[Delivery]:
    taken: list[Delivery] = []
    deadline = time.monotonic() + 10
    while len(taken) < count and time.monotonic() < deadline:
        taken += await queue.take("w", count - len(taken), wait=1)
    return taken


async def test_a_reject_turn_is_refused_while_its_session_has_another_queued(
    queues: QueueFactory,
) -> None:
    queue = await queues()
    first = turn("acme", "s1", 1)
    assert await queue.enqueue(first)
    rejecting = msgspec.structs.replace(turn("acme", "s1", 2), on_busy="reject")
    with pytest.raises(SessionBusy) as refused:
        await queue.enqueue(rejecting)
    assert refused.value.status == 409
    assert str(refused.value) == f"this session is running turn {first.turn_id}"
    assert not await queue.is_queued(rejecting.session_id, rejecting.turn_id)
    # Another session's reject turn is queued; the same one sent again is not doubled.
    alone = msgspec.structs.replace(turn("acme", "s2", 3), on_busy="reject")
    assert await queue.enqueue(alone)
    assert not await queue.enqueue(alone)
    [taken] = await take_all(queue, 1)  # still running: the session stays busy
    await queue.ack((await take_all(queue, 1))[0])
    with pytest.raises(SessionBusy):
        await queue.enqueue(msgspec.structs.replace(turn("acme", "s1", 4), on_busy="reject"))
    await queue.ack(taken)
    later = msgspec.structs.replace(turn("acme", taken.turn.session_id.split("/")[1], 5),
                                    on_busy="reject")  # fmt: skip
    assert await queue.enqueue(later)


async def test_a_cancelled_turn_nobody_took_never_runs(queues: QueueFactory) -> None:
    api, worker = await queues(), await queues()
    queued = turn()
    await api.enqueue(queued)
    removed = await api.cancel(queued.session_id, queued.turn_id)
    assert not await api.is_queued(queued.session_id, queued.turn_id)
    taken = await worker.take("w", 5, wait=1 if removed else 5)
    if removed:
        assert taken == []
    else:  # marked (a Cluster): the worker that takes it finds it withdrawn
        [delivery] = taken
        with pytest.raises(Withdrawn):
            await worker.earlier(delivery)
        await worker.ack(delivery)
    assert (await api.stats()).depth == 0
    assert not await api.cancel(queued.session_id, queued.turn_id)  # nothing left to cancel


async def test_a_cancelled_turn_a_worker_holds_is_found_withdrawn(queues: QueueFactory) -> None:
    api, worker = await queues(), await queues()
    queued = turn()
    await api.enqueue(queued)
    [delivery] = await worker.take("w", 1, wait=5)
    assert not await api.cancel(queued.session_id, queued.turn_id)  # held: marked
    with pytest.raises(Withdrawn):
        await worker.earlier(delivery)
    await worker.ack(delivery)
    assert (await api.stats()).depth == 0
    # Sent again under the same id, it is queued anew; the old delivery stays withdrawn.
    assert await api.enqueue(queued)
    with pytest.raises(Withdrawn):
        await worker.earlier(delivery)


async def test_a_deleted_sessions_turns_are_withdrawn(queues: QueueFactory) -> None:
    api, worker = await queues(), await queues()
    held, waiting = turn("acme", "gone", 1), turn("acme", "gone", 2)
    kept = turn("acme", "kept", 3)
    await api.enqueue(held)
    [delivery] = await worker.take("w", 1, wait=5)
    assert delivery.turn.turn_id == held.turn_id
    await api.enqueue(waiting)
    await api.enqueue(kept)
    removed = await api.drop_session(held.session_id)
    assert set(removed) <= {waiting.turn_id}
    with pytest.raises(Withdrawn):
        await worker.earlier(delivery)
    await worker.ack(delivery)
    rest = await take_all(worker, 2 if not removed else 1)
    for each in rest:
        if each.turn.turn_id == kept.turn_id:
            assert not await worker.earlier(each)
        else:
            with pytest.raises(Withdrawn):
                await worker.earlier(each)
        await worker.ack(each)
    assert kept.turn_id in [d.turn.turn_id for d in rest]
    assert (await api.stats()).depth == 0
