"""Group commit in the PostgreSQL store (`stores/pg_batch.py`): turn steps that queue while
one is in flight go as one statement, and each turn still gets its own exact outcome.

A batch is made deterministic by holding a session's row lock from another connection: the
lone step of that session blocks in PostgreSQL, the steps submitted meanwhile queue, and the
moment the lock goes they are sent together."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from agenthost.core.errors import IdempotencyKeyReused, LeaseLost, StoreUnavailable
from agenthost.stores import Busy, Completed, Message, Started, TurnRecord, create_store
from agenthost.stores.postgres import PostgresStore
from tests.fixtures.agenthost import async_wait_until


def sid(prefix: str = "b") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(postgres_store: PostgresStore) -> PostgresStore:
    return postgres_store


async def begin(store: PostgresStore, session_id: str, turn_id: str, fp: str = "") -> Any:
    return await store.begin_turn(
        session_id,
        turn_id,
        f"q {turn_id}",
        metadata_patch=None,
        lease_ms=30_000,
        window=10,
        ttl_s=math.inf,
        fingerprint=fp,
    )


async def started(store: PostgresStore, session_id: str, turn_id: str) -> Started:
    st = await begin(store, session_id, turn_id)
    assert isinstance(st, Started)
    return st


async def commit(store: PostgresStore, st: Started) -> TurnRecord:
    n, now, tid = st.message_count, time.time(), st.lease.turn_id
    return await store.commit_turn(
        st.lease,
        user=Message("user", f"q {tid}", tid, now, n),
        assistant=Message("assistant", f"a {tid}", tid, now, n + 1),
        metadata={},
        ttl_s=math.inf,
    )


@contextlib.asynccontextmanager
async def row_locked(store: PostgresStore, session_id: str) -> AsyncIterator[asyncpg.Connection]:
    """The session's row locked by another transaction until the block ends."""
    conn: asyncpg.Connection = await asyncpg.connect(store.dsn)
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute(
            "SELECT 1 FROM agenthost_sessions WHERE session_id = $1 FOR UPDATE", session_id
        )
        try:
            yield conn
        finally:
            await tx.rollback()
    finally:
        await conn.close()


async def waiting_on_lock(store: PostgresStore, function: str) -> list[int]:
    """Backends whose statement calls `function` and waits for a lock."""
    conn: asyncpg.Connection = await asyncpg.connect(store.dsn)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE $1 AND pid <> pg_backend_pid()",
            f"%{function}(%",
        )
    finally:
        await conn.close()
    return [row[0] for row in rows]


async def blocked(store: PostgresStore, function: str) -> None:
    """Poll (with a deadline) until a statement calling `function` waits on a row lock."""
    deadline = time.monotonic() + 10
    delay = 0.01
    while not await waiting_on_lock(store, function):
        assert time.monotonic() < deadline, f"{function} never waited on a row lock"
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


async def queued(store: PostgresStore, step: str, count: int) -> None:
    batcher = store.batchers[step]
    await async_wait_until(lambda: batcher.queued == count, 10, f"{count} {step}s queued")


async def test_a_lone_step_goes_alone_at_once(store: PostgresStore) -> None:
    st = await started(store, sid(), "t1")
    await commit(store, st)
    assert store.batchers["begin"].sizes == {1: 1}
    assert store.batchers["commit"].sizes == {1: 1}


async def test_steps_submitted_in_one_pass_of_the_loop_go_as_one_batch(
    store: PostgresStore,
) -> None:
    """A step that finds nothing in flight lingers while the event loop runs what is ready
    (`batch_linger`), so the steps a burst submits together share its statement instead of
    the first going alone."""
    sessions = [sid() for _ in range(3)]
    results = await asyncio.gather(*(begin(store, s, "t") for s in sessions))
    assert all(isinstance(r, Started) and r.created for r in results), results
    assert store.batchers["begin"].sizes == {3: 1}
    records = await asyncio.gather(*(commit(store, r) for r in results))
    assert all(r.status == "completed" for r in records)
    assert store.batchers["commit"].sizes == {3: 1}


async def test_batch_linger_0_sends_the_first_step_at_once(postgres_url: str) -> None:
    store = create_store(f"{postgres_url}?batch_linger=0")
    assert isinstance(store, PostgresStore)
    await store.open()
    try:
        results = await asyncio.gather(*(begin(store, sid(), "t") for _ in range(3)))
        assert all(isinstance(r, Started) for r in results), results
        assert store.batchers["begin"].sizes == {1: 1, 2: 1}
    finally:
        await store.close()


async def test_begins_queued_together_each_get_their_own_outcome(store: PostgresStore) -> None:
    blocker, fresh, idle, twice, replay, busy, reused = (sid("a"), *(sid() for _ in range(6)))
    await commit(store, await started(store, idle, "before"))
    await commit(store, await started(store, twice, "before"))
    await commit(store, await started(store, replay, "done"))
    await started(store, busy, "holder")
    await commit(store, await started(store, reused, "k"))
    await begin(store, reused, "fp", fp="one")
    await started(store, blocker, "first")
    before = dict(store.batchers["begin"].sizes)
    async with row_locked(store, blocker):
        # The session's lease is held, so this begin answers busy, once it gets the lock.
        lone = asyncio.create_task(begin(store, blocker, "second"))
        await blocked(store, "agenthost_begin")
        tasks = [
            asyncio.create_task(begin(store, fresh, "new")),
            asyncio.create_task(begin(store, idle, "next")),
            asyncio.create_task(begin(store, twice, "one")),
            asyncio.create_task(begin(store, twice, "two")),
            asyncio.create_task(begin(store, replay, "done")),
            asyncio.create_task(begin(store, busy, "waits")),
            asyncio.create_task(begin(store, reused, "fp", fp="two")),
        ]
        await queued(store, "begin", len(tasks))
    results = await asyncio.gather(lone, *tasks, return_exceptions=True)
    assert isinstance(results[0], Busy) and results[0].running_turn_id == "first"
    new, nxt, one, two, done, waits, fp = results[1:]
    assert isinstance(new, Started) and new.created and new.lease.fence == 1
    assert new.history == [] and new.message_count == 0
    assert isinstance(nxt, Started) and not nxt.created and nxt.lease.fence == 2
    assert [(m.seq, m.content) for m in nxt.history] == [(0, "q before"), (1, "a before")]
    assert nxt.message_count == 2 and nxt.created_at > 0
    # One session twice in a batch: in the order sent, the second finds the first's lease.
    assert isinstance(one, Started) and one.lease.fence == 2
    assert isinstance(two, Busy) and two.running_turn_id == "one"
    assert isinstance(done, Completed) and done.record.response == "a done"
    assert isinstance(waits, Busy) and waits.running_turn_id == "holder"
    assert isinstance(fp, IdempotencyKeyReused)
    sizes = store.batchers["begin"].sizes
    assert sizes[1] == before[1] + 1 and sizes[len(tasks)] == 1, sizes
    assert await store.running_turn(idle) == "next"
    record = await store.get_turn(idle, "next")
    assert record is not None and record.status == "running" and record.message == "q next"


async def test_commits_queued_together_each_get_their_own_outcome(store: PostgresStore) -> None:
    blocker, normal, fenced = sid("a"), sid(), sid()
    first = await started(store, blocker, "first")
    ok = await started(store, normal, "ok")
    stale = await started(store, fenced, "old")
    await store.release_lease(stale.lease)
    newer = await started(store, fenced, "new")  # the session's fence moved on
    async with row_locked(store, blocker):
        lone = asyncio.create_task(commit(store, first))
        await blocked(store, "agenthost_commit")
        tasks = [
            asyncio.create_task(commit(store, ok)),
            asyncio.create_task(commit(store, stale)),
            asyncio.create_task(commit(store, newer)),
        ]
        await queued(store, "commit", 3)
    results = await asyncio.gather(lone, *tasks, return_exceptions=True)
    assert isinstance(results[0], TurnRecord) and results[0].status == "completed"
    assert isinstance(results[1], TurnRecord) and results[1].response == "a ok"
    assert isinstance(results[2], LeaseLost)
    assert isinstance(results[3], TurnRecord) and results[3].response == "a new"
    assert store.batchers["commit"].sizes == {1: 1, 3: 1}
    messages = await store.list_messages(fenced, 10)
    assert messages is not None and [m.turn_id for m in messages] == ["new", "new"]


async def test_a_row_postgresql_refuses_fails_alone(store: PostgresStore) -> None:
    """An error of one row rolls the whole statement back; every row is then sent alone."""
    blocker, good, bad = sid("a"), sid(), sid()
    await commit(store, await started(store, bad, "t0"))
    first = await started(store, blocker, "first")
    fine = await started(store, good, "ok")
    wrong = await started(store, bad, "t1")
    wrong.message_count = 0  # its messages would take seqs 0 and 1 again: a key violation
    async with row_locked(store, blocker):
        lone = asyncio.create_task(commit(store, first))
        await blocked(store, "agenthost_commit")
        tasks = [
            asyncio.create_task(commit(store, fine)),
            asyncio.create_task(commit(store, wrong)),
        ]
        await queued(store, "commit", 2)
    results = await asyncio.gather(lone, *tasks, return_exceptions=True)
    assert isinstance(results[0], TurnRecord) and isinstance(results[1], TurnRecord)
    assert isinstance(results[2], asyncpg.UniqueViolationError)
    # The batch of two, then each of its rows alone.
    assert store.batchers["commit"].sizes == {1: 4, 2: 1}
    info = await store.get_session(good)
    assert info is not None and info.turns == 1


async def test_a_batch_whose_connection_dies_leaves_every_turn_retryable_and_committed_once(
    store: PostgresStore,
) -> None:
    blocker, held = sid("a"), sid("z")  # held sorts last: the batch wrote the others first
    others = [sid("m") for _ in range(3)]
    first = await started(store, blocker, "first")
    turns = [await started(store, s, f"t-{s}") for s in (held, *others)]
    async with row_locked(store, held):
        async with row_locked(store, blocker):
            lone = asyncio.create_task(commit(store, first))
            await blocked(store, "agenthost_commit")
            tasks = [asyncio.create_task(commit(store, st)) for st in turns]
            await queued(store, "commit", len(turns))
        await lone
        await blocked(store, "agenthost_commit_many")
        (pid,) = await waiting_on_lock(store, "agenthost_commit_many")
        killer: asyncpg.Connection = await asyncpg.connect(store.dsn)
        try:
            assert await killer.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await killer.close()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    assert store.batchers["commit"].sizes[len(turns)] == 1
    for st in turns:  # the same lease, retried: committed now, and only once
        record = await commit(store, st)
        assert record.status == "completed"
        with pytest.raises(LeaseLost):
            await commit(store, st)
        messages = await store.list_messages(st.lease.session_id, 10)
        assert messages is not None and [m.seq for m in messages] == [0, 1]
        info = await store.get_session(st.lease.session_id)
        assert info is not None and info.turns == 1


async def test_batch_min_above_the_queue_sends_each_step_alone(postgres_url: str) -> None:
    """`?batch_min=N`: fewer than N queued steps go alone, side by side (what a Citus
    deployment sets, where a batch would span workers)."""
    store = create_store(f"{postgres_url}?batch_min=1000")
    assert isinstance(store, PostgresStore)
    await store.open()
    try:
        blocker, others = sid("a"), [sid() for _ in range(3)]
        first = await started(store, blocker, "first")
        turns = [await started(store, s, "t") for s in others]
        async with row_locked(store, blocker):
            lone = asyncio.create_task(commit(store, first))
            await blocked(store, "agenthost_commit")
            tasks = [asyncio.create_task(commit(store, st)) for st in turns]
            await queued(store, "commit", len(turns))
        results = await asyncio.gather(lone, *tasks)
        assert all(r.status == "completed" for r in results)
        assert store.batchers["commit"].sizes == {1: 1 + len(turns)}
    finally:
        await store.close()


async def test_the_batch_functions_keep_one_generic_plan(store: PostgresStore) -> None:
    """Schema 9: with arrays for parameters, PL/pgSQL would plan every statement of every
    call again (a generic plan over arrays of unknown length is estimated dearer than the
    custom ones); the batch functions force the generic plan, which finds every row by its
    key as the custom one does."""
    conn: asyncpg.Connection = await asyncpg.connect(store.dsn)
    try:
        rows = await conn.fetch(
            "SELECT proname, proconfig FROM pg_proc WHERE proname = ANY ($1::text[])",
            ["agenthost_begin_many", "agenthost_commit_many"],
        )
    finally:
        await conn.close()
    assert len(rows) == 2
    for row in rows:
        assert "plan_cache_mode=force_generic_plan" in row["proconfig"], row
    # And the forced plans still answer: a batch of begins and commits.
    sessions = [sid() for _ in range(3)]
    for s in sessions:
        await commit(store, await started(store, s, "t0"))
    results = await asyncio.gather(*(begin(store, s, "t1") for s in sessions))
    assert all(isinstance(r, Started) and r.message_count == 2 for r in results), results
    records = await asyncio.gather(*(commit(store, r) for r in results))
    assert all(r.status == "completed" for r in records)
    assert store.batchers["begin"].sizes[3] == 1 and store.batchers["commit"].sizes[3] == 1
