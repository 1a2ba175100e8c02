"""The turn engine's order and guarantees, on the in-process memory store and simulator."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from agenthost.core.errors import (
    AgentError,
    Draining,
    LeaseLost,
    Overloaded,
    SessionBusy,
    TurnInterrupted,
)
from agenthost.llm import create_llm
from agenthost.stores import SessionStore, Started, create_store
from agenthost.stores.memory import MemoryStore
from agenthost.turns.agents import Turn, demo_agent, load_agent, wrap_agent
from agenthost.turns.engine import TurnEngine


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Poll an async condition with a deadline."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.01)


class GatedAgent:
    """An agent that answers `echo: <message>` once its gate opens; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def __call__(self, turn: Turn) -> str:
        self.calls += 1
        self.entered.set()
        await self.gate.wait()
        return f"echo: {turn.message}"


@pytest.fixture
async def store() -> AsyncIterator[SessionStore]:
    s = create_store("memory://")
    await s.open()
    yield s
    await s.close()


def make_engine(store: SessionStore, agent: Callable[..., Any], **kw: Any) -> TurnEngine:
    return TurnEngine(store, wrap_agent(agent), create_llm("sim://"), **kw)


def sid() -> str:
    return f"s-{uuid.uuid4().hex[:12]}"


async def test_turn_commits_user_and_assistant_and_passes_the_window(store: SessionStore) -> None:
    seen: list[list[str]] = []

    async def agent(turn: Turn) -> str:
        seen.append([m.content for m in turn.history])
        return f"answer {len(turn.history)}"

    engine = make_engine(store, agent, history_window=2)
    s = sid()
    for i in range(3):
        record = await engine.run_turn(s, f"q{i}")
        assert record.status == "completed"
        assert record.response == f"answer {min(2 * i, 2)}"
    assert seen == [[], ["q0", "answer 0"], ["q1", "answer 2"]]
    messages = await store.list_messages(s, 100)
    assert messages is not None
    assert [(m.role, m.content, m.seq) for m in messages] == [
        ("user", "q0", 0),
        ("assistant", "answer 0", 1),
        ("user", "q1", 2),
        ("assistant", "answer 2", 3),
        ("user", "q2", 4),
        ("assistant", "answer 2", 5),
    ]


async def test_same_turn_id_three_times_one_while_running_calls_agent_once(
    store: SessionStore,
) -> None:
    agent = GatedAgent()
    engine = make_engine(store, agent)
    s = sid()
    first = asyncio.create_task(engine.run_turn(s, "hello", turn_id="k1"))
    await agent.entered.wait()
    second = asyncio.create_task(engine.run_turn(s, "hello", turn_id="k1"))
    await asyncio.sleep(0)  # let the retry reach the store and start waiting
    agent.gate.set()
    r1, r2 = await asyncio.gather(first, second)
    r3 = await engine.run_turn(s, "hello", turn_id="k1")
    assert agent.calls == 1
    assert r1.response == r2.response == r3.response == "echo: hello"
    messages = await store.list_messages(s, 100)
    assert messages is not None and len(messages) == 2


async def test_reject_policy_answers_busy_for_another_turn_and_for_the_same(
    store: SessionStore,
) -> None:
    agent = GatedAgent()
    engine = make_engine(store, agent)
    s = sid()
    running = asyncio.create_task(engine.run_turn(s, "a", turn_id="t1"))
    await agent.entered.wait()
    with pytest.raises(SessionBusy):
        await engine.run_turn(s, "b", turn_id="t2", on_busy="reject")
    with pytest.raises(SessionBusy):
        await engine.run_turn(s, "a", turn_id="t1", on_busy="reject")
    agent.gate.set()
    await running
    assert agent.calls == 1


async def test_enqueue_runs_the_second_turn_after_the_first(store: SessionStore) -> None:
    agent = GatedAgent()
    engine = make_engine(store, agent)
    s = sid()
    first = asyncio.create_task(engine.run_turn(s, "a"))
    await agent.entered.wait()
    second = asyncio.create_task(engine.run_turn(s, "b", on_busy="enqueue"))
    await asyncio.sleep(0)
    assert not second.done()
    agent.gate.set()
    await asyncio.gather(first, second)
    messages = await store.list_messages(s, 100)
    assert messages is not None
    assert [m.content for m in messages] == ["a", "echo: a", "b", "echo: b"]


async def test_enqueue_wait_is_bounded(store: SessionStore) -> None:
    agent = GatedAgent()
    engine = make_engine(store, agent, enqueue_timeout=0.2)
    s = sid()
    first = asyncio.create_task(engine.run_turn(s, "a"))
    await agent.entered.wait()
    with pytest.raises(SessionBusy):
        await engine.run_turn(s, "b")
    agent.gate.set()
    await first


async def test_interrupt_cancels_the_running_turn_and_keeps_its_user_message(
    store: SessionStore,
) -> None:
    agent = GatedAgent()
    engine = make_engine(store, agent)
    s = sid()
    first = asyncio.create_task(engine.run_turn(s, "slow", turn_id="t1"))
    await agent.entered.wait()
    agent.gate = asyncio.Event()  # the second call will pass once we open it
    second = asyncio.create_task(engine.run_turn(s, "fast", turn_id="t2", on_busy="interrupt"))
    with pytest.raises(TurnInterrupted):
        await first
    agent.gate.set()
    record = await second
    assert record.response == "echo: fast"
    failed = await store.get_turn(s, "t1")
    assert failed is not None and failed.status == "failed"
    assert failed.error is not None and failed.error.code == "interrupted"
    assert failed.message == "slow"
    messages = await store.list_messages(s, 100)
    assert messages is not None and [m.content for m in messages] == ["fast", "echo: fast"]


async def test_an_interrupt_that_arrives_before_the_lease_reply_still_interrupts_the_turn() -> None:
    # On a fleet, a process sees the turn running (its lease is in the store) and asks to
    # interrupt it while the process that took the lease still waits for the store's reply.
    class InterruptedWhileLeasing(MemoryStore):
        async def begin_turn(self, session_id: str, turn_id: str, *a: Any, **kw: Any) -> Any:
            result = await super().begin_turn(session_id, turn_id, *a, **kw)
            if isinstance(result, Started):
                await self.request_interrupt(session_id, turn_id)
            return result

    store = InterruptedWhileLeasing("memory://")
    await store.open()
    agent = GatedAgent()
    agent.gate.set()
    engine = make_engine(store, agent)
    s = sid()
    with pytest.raises(TurnInterrupted):
        await engine.run_turn(s, "slow", turn_id="t1")
    assert agent.calls == 0, "the agent never ran"
    failed = await store.get_turn(s, "t1")
    assert failed is not None and failed.status == "failed"
    assert failed.error is not None and failed.error.code == "interrupted"
    assert (await store.list_messages(s, 10) or []) == []
    await store.close()


async def test_agent_error_fails_the_turn_and_a_retry_runs_it_again(store: SessionStore) -> None:
    calls = 0

    async def flaky(turn: Turn) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return "ok"

    engine = make_engine(store, flaky)
    s = sid()
    with pytest.raises(AgentError, match="turn t1") as raised:
        await engine.run_turn(s, "q", turn_id="t1")
    assert "boom" not in raised.value.message, "the agent's text stays in the log"
    assert isinstance(raised.value.__cause__, RuntimeError)
    record = await store.get_turn(s, "t1")
    assert record is not None and record.status == "failed"
    assert record.error is not None and record.error.code == "agent_error"
    assert "boom" not in record.error.message
    assert await store.list_messages(s, 10) == []
    retried = await engine.run_turn(s, "q", turn_id="t1")
    assert retried.response == "ok" and calls == 2


async def test_detailed_errors_show_the_agent_exception(store: SessionStore) -> None:
    async def broken(turn: Turn) -> str:
        raise RuntimeError("boom")

    engine = make_engine(store, broken, detailed_errors=True)
    with pytest.raises(AgentError, match="the agent failed: RuntimeError: boom"):
        await engine.run_turn(sid(), "q", turn_id="t1")


async def test_turn_timeout_fails_the_turn(store: SessionStore) -> None:
    agent = GatedAgent()
    engine = make_engine(store, agent, turn_timeout=0.05)
    s = sid()
    with pytest.raises(AgentError, match="longer than"):
        await engine.run_turn(s, "q", turn_id="t1")
    record = await store.get_turn(s, "t1")
    assert record is not None and record.error is not None
    assert record.error.code == "timeout"


async def test_metadata_patch_and_agent_changes_are_saved(store: SessionStore) -> None:
    async def agent(turn: Turn) -> str:
        turn.metadata["count"] = int(turn.metadata.get("count", 0)) + 1
        return "ok"

    engine = make_engine(store, agent)
    s = sid()
    await engine.run_turn(s, "a", metadata={"user": "ada"})
    await engine.run_turn(s, "b")
    info = await store.get_session(s)
    assert info is not None
    assert info.metadata == {"user": "ada", "count": 2}
    assert info.turns == 2


async def test_every_agent_shape_is_accepted_and_streams_chunks(store: SessionStore) -> None:
    async def generator(turn: Turn) -> AsyncIterator[str]:
        for part in ("a", "b", "c"):
            yield part

    async def call_agent(messages: list[dict[str, str]], metadata: dict[str, Any]) -> str:
        return f"{len(messages)} messages, last {messages[-1]['content']}"

    chunks: list[str] = []
    gen_engine = make_engine(store, generator)
    record = await gen_engine.run_turn(sid(), "x", on_chunk=chunks.append)
    assert record.response == "abc" and chunks == ["a", "b", "c"]

    legacy_engine = make_engine(store, call_agent)
    s = sid()
    await legacy_engine.run_turn(s, "one")
    record = await legacy_engine.run_turn(s, "two")
    assert record.response == "3 messages, last two"


async def test_the_built_in_agent_streams_and_answers_as_the_wrapped_demo_agent(
    store: SessionStore,
) -> None:
    """`load_agent(None)` runs `demo_agent` without its generator hop: the same chunks and
    answers, streamed or not."""
    llm = create_llm("sim://?words=12")
    runners = {"built-in": load_agent(None), "wrapped": wrap_agent(demo_agent)}
    seen: dict[str, tuple[list[str], str, str]] = {}
    for name, runner in runners.items():
        engine = TurnEngine(store, runner, llm)
        chunks: list[str] = []
        streamed = await engine.run_turn(sid(), "hello there", on_chunk=chunks.append)
        plain = await engine.run_turn(sid(), "hello there")
        seen[name] = (chunks, streamed.response, plain.response)
    chunks, streamed_answer, plain_answer = seen["built-in"]
    assert len(chunks) > 3 and "".join(chunks) == streamed_answer == plain_answer
    assert seen["built-in"] == seen["wrapped"]


def test_wrong_agent_shapes_are_refused_with_a_clear_message() -> None:
    def sync_agent(turn: Turn) -> str:
        return "x"

    async def three(a: int, b: int, c: int) -> str:
        return "x"

    with pytest.raises(TypeError, match="async"):
        wrap_agent(sync_agent)
    with pytest.raises(TypeError, match="3 positional"):
        wrap_agent(three)


async def test_a_process_that_lost_its_lease_does_not_commit(store: SessionStore) -> None:
    agent = GatedAgent()
    engine = make_engine(store, agent, lease_ttl=0.2)  # renewer not started: the lease lapses
    s = sid()
    stale = asyncio.create_task(engine.run_turn(s, "old", turn_id="t1"))
    await agent.entered.wait()

    async def lease_taken_by_other() -> bool:
        result = await store.begin_turn(
            s, "t2", "new", metadata_patch=None, lease_ms=5000, window=10, ttl_s=60
        )
        return isinstance(result, Started)

    await eventually(lease_taken_by_other)
    agent.gate.set()
    with pytest.raises(LeaseLost):
        await stale
    assert await store.list_messages(s, 10) == []


async def test_renewal_keeps_a_long_turn_leased(store: SessionStore) -> None:
    agent = GatedAgent()
    # Renewed every third of the lease: a loop stalled up to two thirds of it (a loaded CI
    # machine) must not let it lapse, so the lease is not made shorter than a second.
    engine = make_engine(store, agent, lease_ttl=1.0)
    engine.start()
    try:
        s = sid()
        running = asyncio.create_task(engine.run_turn(s, "long", turn_id="t1"))
        await agent.entered.wait()
        deadline = time.monotonic() + 3.2  # more than three lease lifetimes
        while time.monotonic() < deadline:
            result = await store.begin_turn(
                s, "t2", "x", metadata_patch=None, lease_ms=5000, window=1, ttl_s=60
            )
            assert not isinstance(result, Started), "the lease lapsed while the agent ran"
            await asyncio.sleep(0.05)
        agent.gate.set()
        record = await running
        assert record.status == "completed"
    finally:
        await engine.stop()


async def test_draining_and_inflight_limit_refuse_before_any_work(store: SessionStore) -> None:
    agent = GatedAgent()
    engine = make_engine(store, agent, max_inflight_turns=1)
    first = asyncio.create_task(engine.run_turn(sid(), "a"))
    await agent.entered.wait()
    with pytest.raises(Overloaded):
        await engine.run_turn(sid(), "b")
    engine.draining = True
    with pytest.raises(Draining):
        await engine.run_turn(sid(), "c")
    agent.gate.set()
    await first
    assert agent.calls == 1
    assert await engine.wait_idle(1.0)
