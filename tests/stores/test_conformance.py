"""The SessionStore contract, run against every backend in BACKENDS (tests/stores/conftest.py).

Written against the Protocol only; session ids are unique per test because the Redis
backends share one server across tests.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from agenthost.core.errors import IdempotencyKeyReused, LeaseLost, SessionExists
from agenthost.stores import (
    Busy,
    Completed,
    Lease,
    Message,
    SessionStore,
    Started,
    TurnError,
)
from agenthost.stores.base import WindowMark

TTL = 60.0
LEASE_MS = 10_000


def sid() -> str:
    return f"conf-{uuid.uuid4().hex[:16]}"


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Poll an async condition with a deadline."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.02)


async def begin(
    store: SessionStore,
    session_id: str,
    turn_id: str,
    message: str = "hi",
    *,
    lease_ms: int = LEASE_MS,
    window: int = 50,
    patch: dict[str, Any] | None = None,
    ttl_s: float = TTL,
    fingerprint: str = "",
    known: WindowMark | None = None,
) -> Started | Completed | Busy:
    return await store.begin_turn(
        session_id,
        turn_id,
        message,
        metadata_patch=patch,
        lease_ms=lease_ms,
        window=window,
        ttl_s=ttl_s,
        fingerprint=fingerprint,
        known=known,
    )


async def started(store: SessionStore, session_id: str, turn_id: str, **kw: Any) -> Started:
    result = await begin(store, session_id, turn_id, **kw)
    assert isinstance(result, Started), result
    return result


async def commit(
    store: SessionStore,
    s: Started,
    message: str = "hi",
    answer: str | None = None,
    metadata: dict[str, Any] | None = None,
    ttl_s: float = TTL,
) -> None:
    lease = s.lease
    n = s.message_count
    await store.commit_turn(
        lease,
        user=Message("user", message, lease.turn_id, time.time(), n),
        assistant=Message(
            "assistant", answer or f"re: {message}", lease.turn_id, time.time(), n + 1
        ),
        metadata=s.metadata if metadata is None else metadata,
        ttl_s=ttl_s,
    )


async def full_turn(store: SessionStore, session_id: str, turn_id: str, message: str) -> None:
    await commit(store, await started(store, session_id, turn_id, message=message), message)


# -- sessions -----------------------------------------------------------------------------


async def test_create_get_and_conflict(store: SessionStore) -> None:
    s = sid()
    info = await store.create_session(s, {"plan": "pro", "n": [1, 2]}, TTL)
    assert info.session_id == s and info.turns == 0
    assert info.metadata == {"plan": "pro", "n": [1, 2]}
    got = await store.get_session(s)
    assert got is not None and got.metadata == info.metadata
    assert got.created_at == pytest.approx(info.created_at)
    with pytest.raises(SessionExists):
        await store.create_session(s, {}, TTL)
    assert await store.get_session(sid()) is None


async def test_delete_removes_messages_turns_and_lease(store: SessionStore) -> None:
    s = sid()
    await full_turn(store, s, "t1", "one")
    running = await started(store, s, "t2")
    assert await store.delete_session(s) is True
    assert await store.get_session(s) is None
    assert await store.list_messages(s, 10) is None
    assert await store.get_turn(s, "t1") is None
    assert await store.delete_session(s) is False
    # The deleted session's lease is gone: a new turn starts at once, a stale commit fails.
    fresh = await started(store, s, "t3")
    assert fresh.created and fresh.message_count == 0 and fresh.history == []
    with pytest.raises(LeaseLost):
        await commit(store, running)


async def test_a_deleted_sessions_turn_ids_are_forgotten_and_its_running_turn_cut(
    store: SessionStore,
) -> None:
    """Delete drops the idempotency records: a turn id used before starts afresh, never
    replays the deleted answer. The turn running at the delete lost its lease: its renew,
    commit and fail all find it gone and write nothing, even once the id runs again."""
    s = sid()
    await full_turn(store, s, "k", "secret")
    running = await started(store, s, "t2", message="in flight")
    assert await store.delete_session(s) is True
    assert await store.get_turn(s, "k") is None and await store.get_turn(s, "t2") is None
    assert not await store.renew_lease(running.lease, LEASE_MS)
    assert await store.fail_turn(running.lease, TurnError("agent_error", "x"), TTL) is None
    again = await started(store, s, "k", message="new")
    assert again.created and again.history == [] and again.message_count == 0
    with pytest.raises(LeaseLost):
        await commit(store, running, "in flight")
    await commit(store, again, "new")
    messages = await store.list_messages(s, 10)
    assert messages is not None and [m.content for m in messages] == ["new", "re: new"]


# -- begin / commit -----------------------------------------------------------------------


async def test_begin_creates_the_session_records_the_turn_and_takes_the_lease(
    store: SessionStore,
) -> None:
    s = sid()
    first = await started(store, s, "t1", message="hello")
    assert first.created and first.message_count == 0 and first.history == []
    assert first.lease == Lease(s, "t1", first.lease.fence)
    record = await store.get_turn(s, "t1")
    assert record is not None and record.status == "running" and record.message == "hello"
    assert (await store.get_session(s)) is not None
    busy = await begin(store, s, "t2")
    assert busy == Busy("t1")
    same = await begin(store, s, "t1")
    assert same == Busy("t1")


async def test_commit_appends_both_messages_and_completes(store: SessionStore) -> None:
    s = sid()
    st = await started(store, s, "t1", message="q")
    await commit(store, st, "q", "a", metadata={"k": "v"})
    messages = await store.list_messages(s, 10)
    assert messages is not None
    assert [(m.role, m.content, m.turn_id, m.seq) for m in messages] == [
        ("user", "q", "t1", 0),
        ("assistant", "a", "t1", 1),
    ]
    record = await store.get_turn(s, "t1")
    assert record is not None and record.status == "completed" and record.response == "a"
    info = await store.get_session(s)
    assert info is not None and info.turns == 1 and info.metadata == {"k": "v"}
    assert info.updated_at >= info.created_at
    nxt = await started(store, s, "t2")
    assert nxt.message_count == 2 and not nxt.created
    assert nxt.lease.fence > st.lease.fence


async def test_completed_turn_is_returned_without_a_new_lease(store: SessionStore) -> None:
    s = sid()
    await full_turn(store, s, "t1", "q")
    running = await started(store, s, "t2")  # another turn holds the lease now
    again = await begin(store, s, "t1")
    assert isinstance(again, Completed)
    assert again.record.turn_id == "t1" and again.record.response == "re: q"
    assert await begin(store, s, "t3") == Busy("t2")
    await commit(store, running)


async def test_window_returns_only_the_newest_messages_oldest_first(store: SessionStore) -> None:
    s = sid()
    for i in range(5):
        await full_turn(store, s, f"t{i}", f"m{i}")
    st = await started(store, s, "t5", window=3)
    assert [m.seq for m in st.history] == [7, 8, 9]
    assert [m.content for m in st.history] == ["re: m3", "m4", "re: m4"]
    assert st.message_count == 10
    await commit(store, st)
    none = await started(store, s, "t6", window=0)
    assert none.history == [] and none.message_count == 12


# Every backend answers a caller's mark with only the newer messages (the window cache),
# except those named here, which must answer the whole window whatever the mark says.
WHOLE_WINDOW_STORES: frozenset[str] = frozenset()


def answers_deltas(request: pytest.FixtureRequest) -> bool:
    return request.node.callspec.params["store"] not in WHOLE_WINDOW_STORES


async def test_a_valid_mark_gets_only_the_messages_after_it(
    store: SessionStore, request: pytest.FixtureRequest
) -> None:
    s = sid()
    for i in range(3):
        await full_turn(store, s, f"t{i}", f"m{i}")
    first = await started(store, s, "t3", window=4)
    assert not first.delta and [m.seq for m in first.history] == [2, 3, 4, 5]
    await commit(store, first, "m3")
    mark = WindowMark(first.created_at, 8)
    if not answers_deltas(request):
        again = await started(store, s, "t4", window=4, known=mark)
        assert not again.delta and [m.seq for m in again.history] == [4, 5, 6, 7]
        await commit(store, again, "m4")
        return
    assert first.created_at > 0
    # Nothing new since the mark: an empty delta.
    same = await started(store, s, "t4", window=4, known=mark)
    assert same.delta and same.history == [] and same.message_count == 8
    assert same.created_at == first.created_at
    await commit(store, same, "m4")
    # Two messages came after the mark (another process ran that turn): just those.
    behind = await started(store, s, "t5", window=4, known=mark)
    assert behind.delta and [m.content for m in behind.history] == ["m4", "re: m4"]
    await commit(store, behind, "m5")
    # Further behind than the window: the newest `window` messages, still a delta.
    far = await started(store, s, "t6", window=3, known=WindowMark(first.created_at, 2))
    assert far.delta and [m.seq for m in far.history] == [9, 10, 11]
    await commit(store, far, "m6")


async def test_a_mark_of_another_incarnation_gets_the_whole_window(store: SessionStore) -> None:
    s = sid()
    for i in range(2):
        await full_turn(store, s, f"t{i}", f"m{i}")
    old = await started(store, s, "t2", window=50)
    await commit(store, old, "m2")
    assert await store.delete_session(s)
    for i in range(4):  # the same id again, grown past the old mark
        await full_turn(store, s, f"n{i}", f"n{i}")
    stale = WindowMark(old.created_at, 6)
    fresh = await started(store, s, "n4", window=50, known=stale)
    assert not fresh.delta
    assert [m.content for m in fresh.history][:2] == ["n0", "re: n0"]
    assert len(fresh.history) == 8
    await commit(store, fresh, "n4")
    # A mark ahead of the session is not of it either.
    ahead = await started(store, s, "n5", window=2, known=WindowMark(fresh.created_at, 99))
    assert not ahead.delta and [m.seq for m in ahead.history] == [8, 9]
    await commit(store, ahead, "n5")


async def test_list_messages_pages_with_before(store: SessionStore) -> None:
    s = sid()
    for i in range(4):
        await full_turn(store, s, f"t{i}", f"m{i}")
    newest = await store.list_messages(s, 3)
    assert newest is not None and [m.seq for m in newest] == [5, 6, 7]
    older = await store.list_messages(s, 3, before=5)
    assert older is not None and [m.seq for m in older] == [2, 3, 4]
    oldest = await store.list_messages(s, 3, before=2)
    assert oldest is not None and [m.seq for m in oldest] == [0, 1]
    assert await store.list_messages(s, 3, before=0) == []
    everything = await store.list_messages(s, 100)
    assert everything is not None and len(everything) == 8


async def test_metadata_patch_is_merged_and_saved_only_on_commit(store: SessionStore) -> None:
    s = sid()
    await store.create_session(s, {"a": 1, "b": 2}, TTL)
    st = await started(store, s, "t1", patch={"b": 3, "c": 4})
    assert st.metadata == {"a": 1, "b": 3, "c": 4}
    info = await store.get_session(s)
    assert info is not None and info.metadata == {"a": 1, "b": 2}
    await commit(store, st, metadata={**st.metadata, "d": {"nested": [1]}})
    info = await store.get_session(s)
    assert info is not None and info.metadata == {"a": 1, "b": 3, "c": 4, "d": {"nested": [1]}}


async def test_agent_state_commits_with_the_turn_and_only_then(store: SessionStore) -> None:
    s = sid()
    first = await started(store, s, "t1")
    assert first.state is None
    await store.commit_turn(
        first.lease,
        user=Message("user", "a", "t1", time.time(), 0),
        assistant=Message("assistant", "b", "t1", time.time(), 1),
        metadata={},
        ttl_s=TTL,
        state=b"\x00state-1\xff",
    )
    second = await started(store, s, "t2")
    assert second.state == b"\x00state-1\xff"
    # A failed turn writes no state: the next attempt starts from the last commit's.
    await store.fail_turn(second.lease, TurnError("agent_error", "boom"), TTL)
    third = await started(store, s, "t2")
    assert third.state == b"\x00state-1\xff"
    # A commit without a state keeps the one saved.
    await commit(store, third, "c")
    fourth = await started(store, s, "t3")
    assert fourth.state == b"\x00state-1\xff"
    # A stale owner's state is refused with its commit.
    await store.release_lease(fourth.lease)
    fifth = await started(store, s, "t4")
    with pytest.raises(LeaseLost):
        await store.commit_turn(
            fourth.lease,
            user=Message("user", "x", "t3", time.time(), fourth.message_count),
            assistant=Message("assistant", "y", "t3", time.time(), fourth.message_count + 1),
            metadata={},
            ttl_s=TTL,
            state=b"stale",
        )
    await store.release_lease(fifth.lease)
    assert (await started(store, s, "t5")).state == b"\x00state-1\xff"


async def test_deleting_or_expiring_a_session_drops_its_agent_state(store: SessionStore) -> None:
    s = sid()
    st = await started(store, s, "t1")
    await store.commit_turn(
        st.lease,
        user=Message("user", "a", "t1", time.time(), 0),
        assistant=Message("assistant", "b", "t1", time.time(), 1),
        metadata={},
        ttl_s=0.5,
        state=b"old",
    )

    async def gone() -> bool:
        return await store.get_session(s) is None

    await eventually(gone)
    assert (await started(store, s, "t2")).state is None
    s2 = sid()
    st = await started(store, s2, "t1")
    await store.commit_turn(
        st.lease,
        user=Message("user", "a", "t1", time.time(), 0),
        assistant=Message("assistant", "b", "t1", time.time(), 1),
        metadata={},
        ttl_s=TTL,
        state=b"kept",
    )
    assert await store.delete_session(s2)
    assert (await started(store, s2, "t1")).state is None


# -- fencing and leases -------------------------------------------------------------------


async def test_running_turn_is_the_live_lease_holder(store: SessionStore) -> None:
    s = sid()
    assert await store.running_turn(s) is None  # no session
    st = await started(store, s, "t1")
    assert await store.running_turn(s) == "t1"
    await commit(store, st)
    assert await store.running_turn(s) is None  # committed: nothing runs
    await started(store, s, "t2", lease_ms=200)
    assert await store.running_turn(s) == "t2"

    async def expired() -> bool:
        return await store.running_turn(s) is None

    await eventually(expired)  # the holder died: its lease ran out


async def test_unfinished_turn_is_the_newest_turn_while_it_has_not_ended(
    store: SessionStore,
) -> None:
    s = sid()
    assert await store.unfinished_turn(s) is None  # no session
    await commit(store, await started(store, s, "t1"))
    assert await store.unfinished_turn(s) is None  # the newest turn ended
    await started(store, s, "t2", lease_ms=200)
    assert await store.unfinished_turn(s) == "t2"  # running

    async def lapsed() -> bool:
        return await store.running_turn(s) is None

    await eventually(lapsed)  # its process died: nothing runs, and t2 is still not done
    assert await store.unfinished_turn(s) == "t2"
    failing = await started(store, s, "t3")  # a newer turn: t2 is history now
    assert await store.unfinished_turn(s) == "t3"
    await store.fail_turn(failing.lease, TurnError("agent_error", "boom"), TTL)
    assert await store.unfinished_turn(s) is None


async def test_a_dead_owners_lease_expires_and_the_next_owner_gets_a_higher_fence(
    store: SessionStore,
) -> None:
    s = sid()
    dead = await started(store, s, "t1", lease_ms=200)
    result: list[Started] = []

    async def taken() -> bool:
        r = await begin(store, s, "t2")
        if isinstance(r, Started):
            result.append(r)
            return True
        assert r == Busy("t1")
        return False

    await eventually(taken)
    assert result[0].lease.fence > dead.lease.fence
    record = await store.get_turn(s, "t1")
    assert record is not None and record.status == "pending"


async def test_a_stale_owners_commit_is_refused_and_writes_nothing(store: SessionStore) -> None:
    s = sid()
    stale = await started(store, s, "t1", lease_ms=200)

    async def expired() -> bool:
        record = await store.get_turn(s, "t1")
        return record is not None and record.status == "pending"

    await eventually(expired)
    with pytest.raises(LeaseLost):
        await commit(store, stale, metadata={"written": True})
    assert await store.list_messages(s, 10) == []
    info = await store.get_session(s)
    assert info is not None and info.turns == 0 and info.metadata == {}
    # A newer owner's lease is not disturbed by the stale one.
    newer = await started(store, s, "t2")
    with pytest.raises(LeaseLost):
        await commit(store, stale)
    assert await store.fail_turn(stale.lease, TurnError("x", "y"), TTL) is None
    assert await store.release_lease(stale.lease) is False
    assert await store.renew_lease(stale.lease, LEASE_MS) is False
    await commit(store, newer, "new")
    messages = await store.list_messages(s, 10)
    assert messages is not None and [m.content for m in messages] == ["new", "re: new"]


async def test_the_same_turn_retried_after_its_owner_died_commits_once(
    store: SessionStore,
) -> None:
    s = sid()
    first = await started(store, s, "t1", lease_ms=200)
    retries: list[Started] = []

    async def retried() -> bool:
        r = await begin(store, s, "t1")
        if isinstance(r, Started):
            retries.append(r)
            return True
        return False

    await eventually(retried)
    await commit(store, retries[0], "hi", "answer")
    with pytest.raises(LeaseLost):
        await commit(store, first, "hi", "other answer")
    again = await begin(store, s, "t1")
    assert isinstance(again, Completed) and again.record.response == "answer"
    messages = await store.list_messages(s, 10)
    assert messages is not None and len(messages) == 2


async def test_renew_extends_and_release_frees_the_lease(store: SessionStore) -> None:
    s = sid()
    st = await started(store, s, "t1", lease_ms=300)
    for _ in range(3):
        assert await store.renew_lease(st.lease, 300)
    assert await begin(store, s, "t2") == Busy("t1")
    assert await store.release_lease(st.lease) is True
    assert await store.release_lease(st.lease) is False
    record = await store.get_turn(s, "t1")
    assert record is not None and record.status == "pending"
    await started(store, s, "t2")


async def test_fail_turn_keeps_the_user_message_in_the_record_and_frees_the_session(
    store: SessionStore,
) -> None:
    s = sid()
    st = await started(store, s, "t1", message="please")
    failed = await store.fail_turn(st.lease, TurnError("agent_error", "boom"), TTL)
    assert failed is not None and failed.status == "failed"
    assert failed.error == TurnError("agent_error", "boom") and failed.message == "please"
    record = await store.get_turn(s, "t1")
    assert record is not None and record.status == "failed" and record.message == "please"
    assert await store.list_messages(s, 10) == []
    # The session is free, and a retry of the failed turn runs it again.
    retry = await started(store, s, "t1", message="please")
    await commit(store, retry, "please", "done")
    record = await store.get_turn(s, "t1")
    assert record is not None and record.status == "completed" and record.error is None


async def test_a_turn_id_sent_with_another_requests_fingerprint_is_refused(
    store: SessionStore,
) -> None:
    """The IETF idempotency-key draft: a key names one request. Running, completed or
    failed, a turn id recorded with one fingerprint refuses another, and changes nothing."""
    s = sid()
    running = await started(store, s, "t1", message="first", fingerprint="fp-a")
    with pytest.raises(IdempotencyKeyReused):
        await begin(store, s, "t1", message="second", fingerprint="fp-b")
    assert await begin(store, s, "t1", message="first", fingerprint="fp-a") == Busy("t1")
    await commit(store, running, "first")
    record = await store.get_turn(s, "t1")
    assert record is not None and record.fingerprint == "fp-a" and record.message == "first"
    with pytest.raises(IdempotencyKeyReused):
        await begin(store, s, "t1", message="second", fingerprint="fp-b")
    again = await begin(store, s, "t1", message="first", fingerprint="fp-a")
    assert isinstance(again, Completed) and again.record.response == "re: first"
    # A failed turn keeps its fingerprint too: its retry must be the same request.
    failing = await started(store, s, "t2", message="x", fingerprint="fp-x")
    await store.fail_turn(failing.lease, TurnError("agent_error", "boom"), TTL)
    with pytest.raises(IdempotencyKeyReused):
        await begin(store, s, "t2", message="y", fingerprint="fp-y")
    retry = await started(store, s, "t2", message="x", fingerprint="fp-x")
    await commit(store, retry, "x")
    messages = await store.list_messages(s, 10)
    assert messages is not None and [m.content for m in messages] == [
        "first", "re: first", "x", "re: x"
    ]  # fmt: skip


# -- expiry --------------------------------------------------------------------------------


async def test_ttl_expiry_hides_the_session_and_purge_removes_it(store: SessionStore) -> None:
    s = sid()
    await commit(store, await started(store, s, "t1", ttl_s=0.5), ttl_s=0.5)

    async def gone() -> bool:
        return await store.get_session(s) is None

    await eventually(gone)
    assert await store.list_messages(s, 10) is None
    assert await store.get_turn(s, "t1") is None
    assert await store.purge_expired() >= 0
    fresh = await started(store, s, "t2")
    assert fresh.created and fresh.history == [] and fresh.message_count == 0


async def test_a_turn_refreshes_the_ttl(store: SessionStore) -> None:
    s = sid()
    await store.create_session(s, {}, 0.6)
    deadline = time.monotonic() + 1.5  # longer than the first TTL: turns keep it alive
    n = 0
    while time.monotonic() < deadline:
        await full_turn(store, s, f"t{n}", "keep")
        n += 1
        await asyncio.sleep(0.1)
    info = await store.get_session(s)
    assert info is not None and info.turns == n


async def test_create_replaces_an_expired_session(store: SessionStore) -> None:
    s = sid()
    await store.create_session(s, {"old": True}, 0.3)

    async def gone() -> bool:
        return await store.get_session(s) is None

    await eventually(gone)
    info = await store.create_session(s, {"new": True}, TTL)
    assert info.metadata == {"new": True}


# -- notifications ------------------------------------------------------------------------


async def test_wait_for_release_wakes_on_commit_fail_and_release(store: SessionStore) -> None:
    for end in ("commit", "fail", "release"):
        s = sid()
        st = await started(store, s, "t1")
        waiter = asyncio.create_task(store.wait_for_release(s, 10.0))

        async def registered(s: str = s) -> bool:
            # Every backend keeps its waiters in a `ReleaseWaiters`. (Redis may still be
            # subscribing: it re-checks the lease once subscribed, so it cannot miss this.)
            # A wrapping store (the cache) shows its PostgreSQL store's as `waiters`.
            waiters = getattr(store, "waiters", None)
            if waiters is None:
                waiters = store._waiters  # type: ignore[attr-defined]
            return bool(waiters.waiting(s))

        await eventually(registered)
        assert not waiter.done()
        t0 = time.monotonic()
        if end == "commit":
            await commit(store, st)
        elif end == "fail":
            await store.fail_turn(st.lease, TurnError("x", "y"), TTL)
        else:
            await store.release_lease(st.lease)
        await asyncio.wait_for(waiter, 5.0)
        assert time.monotonic() - t0 < 5.0, end


async def test_wait_for_release_returns_after_its_timeout(store: SessionStore) -> None:
    s = sid()
    await started(store, s, "t1")
    t0 = time.monotonic()
    await store.wait_for_release(s, 0.2)
    assert 0.15 <= time.monotonic() - t0 < 3.0


async def test_interrupt_requests_reach_the_registered_callbacks(store: SessionStore) -> None:
    s = sid()
    seen: list[tuple[str, str]] = []
    store.on_interrupt(lambda session_id, turn_id: seen.append((session_id, turn_id)))
    await store.request_interrupt(s, "t9")

    async def arrived() -> bool:
        return (s, "t9") in seen

    await eventually(arrived)


async def test_ping_answers_when_healthy(store: SessionStore) -> None:
    await store.ping()
    assert store.url
