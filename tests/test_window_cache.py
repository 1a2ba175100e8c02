"""The window cache (`turns/window_cache.py`): a process keeps each session's window after
its turn, so the next turn reads only what is new from the store -- and the agent still sees
exactly the store's window when other processes ran turns in between, when the session was
deleted and started again, and when the cache is full. Run against every store that several
processes share (an SQLite file, Redis and PostgreSQL, each with two engines as two
processes), and the memory store."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agenthost.llm import create_llm
from agenthost.stores import SessionStore, create_store
from agenthost.stores.base import Message, Started, WindowMark
from agenthost.turns.agents import Turn, wrap_agent
from agenthost.turns.engine import TurnEngine
from agenthost.turns.window_cache import WindowCache

WINDOW = 4


class RecordingAgent:
    """Answers `re: <message>` and keeps the window each turn was handed."""

    def __init__(self) -> None:
        self.windows: list[list[tuple[int, str]]] = []

    async def __call__(self, turn: Turn) -> str:
        self.windows.append([(m.seq, m.content) for m in turn.history])
        return f"re: {turn.message}"


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[SessionStore, SessionStore]]:
    """Two opened stores over the same data, as two processes have (memory: one store)."""
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'sessions.db'}"
    else:
        url = request.getfixturevalue(f"{request.param}_url")
    first = create_store(url)
    await first.open()
    second = first if request.param == "memory" else create_store(url)
    if second is not first:
        await second.open()
    yield first, second
    await first.close()
    if second is not first:
        await second.close()


def engine(store: SessionStore, agent: RecordingAgent, cache_bytes: int) -> TurnEngine:
    return TurnEngine(
        store,
        wrap_agent(agent),
        create_llm("sim://"),
        history_window=WINDOW,
        window_cache=WindowCache(cache_bytes),
    )


async def store_window(store: SessionStore, session_id: str) -> list[tuple[int, str]]:
    messages = await store.list_messages(session_id, WINDOW)
    assert messages is not None
    return [(m.seq, m.content) for m in messages]


async def test_the_agent_sees_the_stores_window_whoever_ran_the_turns_before(
    stores: tuple[SessionStore, SessionStore],
) -> None:
    here_agent, there_agent = RecordingAgent(), RecordingAgent()
    here = engine(stores[0], here_agent, 1 << 20)
    there = engine(stores[1], there_agent, 1 << 20)
    sid = f"s-{uuid.uuid4().hex[:8]}"
    # Turns here, then there, then here again, then a deleted and restarted session.
    plan = [here, here, here, there, here, here, there, there, here]
    for n, runner in enumerate(plan):
        expected = await store_window(stores[0], sid) if n else []
        await runner.run_turn(sid, f"m{n}")
        agent = here_agent if runner is here else there_agent
        assert agent.windows[-1] == expected, f"turn {n}"
    assert here.window_cache.hits >= 3  # the turns that followed a turn of their own
    assert await stores[1].delete_session(sid)
    for n in range(3):
        expected = await store_window(stores[0], sid) if n else []
        await there.run_turn(sid, f"again{n}")
        assert there_agent.windows[-1] == expected
    expected = await store_window(stores[0], sid)
    await here.run_turn(sid, "back here")  # its cached window is of the deleted session
    assert here_agent.windows[-1] == expected
    assert [c for _, c in expected][:2] == ["again1", "re: again1"]


async def test_a_full_cache_forgets_the_oldest_sessions_and_turns_stay_right(
    stores: tuple[SessionStore, SessionStore],
) -> None:
    agent = RecordingAgent()
    # Room for about one session's window of short messages.
    small = engine(stores[0], agent, 4 * 250)
    sessions = [f"s-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    for round_ in range(3):
        for sid in sessions:
            expected = await store_window(stores[0], sid) if round_ else []
            await small.run_turn(sid, f"{sid}-{round_}")
            assert agent.windows[-1] == expected
    assert len(small.window_cache) == 1
    assert small.window_cache.size <= small.window_cache.max_bytes


def test_the_cache_is_bounded_by_bytes_least_recently_used_out() -> None:
    cache = WindowCache(3000)

    def msgs(n: int, size: int) -> list[Message]:
        return [Message("user", "x" * size, "t", 0.0, i) for i in range(n)]

    cache.put("a", 1.0, 2, msgs(2, 500), 50)
    cache.put("b", 1.0, 2, msgs(2, 500), 50)
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("c", 1.0, 2, msgs(2, 500), 50)
    assert cache.get("b") is None and cache.get("a") is not None and len(cache) == 2
    cache.put("huge", 1.0, 9, msgs(9, 1000), 50)  # larger than the whole cache: not kept
    assert cache.get("huge") is None
    cache.put("d", 0.0, 2, msgs(2, 10), 50)  # a store that names no incarnation: not kept
    assert cache.get("d") is None
    cache.drop("a")
    assert cache.get("a") is None and cache.size == cache.get("c").size  # type: ignore[union-attr]


def test_a_delta_is_added_after_the_cached_messages_and_cut_to_the_window() -> None:
    cache = WindowCache(1 << 20)
    old = [Message("user", f"m{i}", "t", 0.0, i) for i in range(4)]
    cache.put("s", 5.0, 4, old, 3)
    cached = cache.get("s")
    assert cached is not None and cached.mark == WindowMark(5.0, 4)
    new = [Message("user", "m4", "t", 0.0, 4)]
    lease = None
    started = Started(lease, new, {}, 5, False, 5.0, True)  # type: ignore[arg-type]
    assert [m.seq for m in cache.window(cached, started, 3)] == [2, 3, 4]
    whole = Started(lease, old, {}, 4, False, 5.0, False)  # type: ignore[arg-type]
    assert cache.window(cached, whole, 3) == old
