"""A Redis cache in front of PostgreSQL, with real processes: `agenthost serve --store
postgresql://... --cache redis://...`, its redis-server (no persistence) SIGKILLed and
restarted empty between turns and under load, and a second process whose commits never
reach the cache.

The claims (docs/data-tier.md): every acknowledged turn is in PostgreSQL, whatever happens
to Redis; the cache alone never causes a 5xx; a cached window another process made stale
is never handed to an agent; the cache serves again once Redis is back.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from agenthost.turns.agents import Turn
from tests.fixtures.agenthost import AgentHostProcess
from tests.fixtures.redis import RedisServer
from tests.test_fleet import assert_history_is, messages_of, post_turn

pytestmark = pytest.mark.slow


async def history_agent(turn: Turn) -> str:
    """Answers with the turn ids of the window it was handed, oldest first."""
    return " ".join(m.turn_id for m in turn.history if m.role == "user") or "-"


@pytest.fixture
def cache_redis(redis_workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(redis_workdir)
    server.start()
    yield server
    server.stop()


def kill(server: RedisServer) -> None:
    os.kill(server.pid, signal.SIGKILL)
    assert server.proc is not None
    server.proc.wait(10)


async def cache_counts(http: aiohttp.ClientSession, base: str) -> dict[str, int]:
    async with http.get(f"{base}/metrics") as resp:
        text = await resp.text()
    found = re.findall(r'agenthost_session_cache_requests_total\{result="(\w+)"\} (\d+)', text)
    return {result: int(count) for result, count in found}


async def test_redis_killed_and_restarted_empty_between_turns_loses_no_turn(
    agenthost_factory: Callable[..., AgentHostProcess],
    postgres_url: str,
    cache_redis: RedisServer,
) -> None:
    # No window cache in the process: every begin reads Redis (with one, a process's own
    # sessions are served from its memory and Redis only for the others').
    server = agenthost_factory(
        store=postgres_url,
        cache=cache_redis.url,
        app="tests.test_fleet_cache:history_agent",
        window_cache_mb=0,
    )
    sessions = [f"between-{i}" for i in range(20)]
    acked: dict[str, dict[str, str]] = {s: {} for s in sessions}
    async with aiohttp.ClientSession() as http:

        async def one_round(n: int) -> None:
            async def one(sid: str) -> None:
                tid = f"{sid}-t{n}"
                status, body, _ = await post_turn(http, server.url, sid, tid, f"m{n}")
                assert status == 200, body  # never a 5xx because of the cache
                # The agent was handed the window of 50 messages: the last 25 turns.
                window = range(max(0, n - 25), n)
                assert body["response"] == (" ".join(f"{sid}-t{k}" for k in window) or "-")
                acked[sid][tid] = body["response"]

            await asyncio.gather(*(one(s) for s in sessions))

        for n in range(3):
            await one_round(n)
        warm = await cache_counts(http, server.url)
        assert warm["hit"] >= 2 * len(sessions)
        kill(cache_redis)
        for n in range(3, 5):
            await one_round(n)
        assert (await cache_counts(http, server.url))["bypass"] >= len(sessions)
        cache_redis.start()  # empty
        n = 5
        deadline = time.monotonic() + 60
        hits = (await cache_counts(http, server.url))["hit"]
        while (await cache_counts(http, server.url))["hit"] <= hits + len(sessions):
            assert time.monotonic() < deadline, "the cache never served again"
            await one_round(n)
            n += 1
        for sid in sessions:
            assert_history_is(await messages_of(http, server.url, sid), acked[sid])


async def test_redis_killed_mid_load_and_restarted_empty_loses_no_acknowledged_turn(
    agenthost_factory: Callable[..., AgentHostProcess],
    postgres_url: str,
    cache_redis: RedisServer,
) -> None:
    server = agenthost_factory(
        store=postgres_url, cache=cache_redis.url, llm="sim://?latency_ms=30", window_cache_mb=0
    )
    sessions, turns = [f"load-{i}" for i in range(100)], 6
    acked: dict[str, dict[str, str]] = {s: {} for s in sessions}
    answered = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as http:

        async def run(sid: str) -> None:
            nonlocal answered
            for n in range(turns):
                tid = f"{sid}-t{n}"
                status, body, _ = await post_turn(http, server.url, sid, tid, f"m{n} {sid}")
                assert status == 200, body
                acked[sid][tid] = body["response"]
                answered += 1

        load = asyncio.gather(*(run(s) for s in sessions))
        deadline = time.monotonic() + 120
        while answered < len(sessions) * turns // 3:
            assert time.monotonic() < deadline and not load.done()
            await asyncio.sleep(0.02)
        kill(cache_redis)
        killed_at = answered
        while answered < killed_at + len(sessions):
            assert time.monotonic() < deadline and not load.done()
            await asyncio.sleep(0.02)
        await asyncio.to_thread(cache_redis.start)
        await load
        assert answered == len(sessions) * turns
        counts = await cache_counts(http, server.url)
        assert counts["bypass"] > 0 and counts["hit"] > 0
        for sid in sessions:
            assert_history_is(await messages_of(http, server.url, sid), acked[sid])


@pytest.mark.parametrize("window_cache_mb", [0, 64], ids=["redis-window", "own-window"])
async def test_a_window_made_stale_by_another_process_is_never_handed_to_the_agent(
    agenthost_factory: Callable[..., AgentHostProcess],
    postgres_url: str,
    cache_redis: RedisServer,
    window_cache_mb: int,
) -> None:
    """`cached` serves from Redis (or, with a window cache, from its own memory, Redis not
    read); `other` commits to PostgreSQL only, so after each of its turns the cached window
    is one turn behind. Each answer lists the window the agent got: it must always hold
    every turn before it, whichever process committed it."""
    app = "tests.test_fleet_cache:history_agent"
    cached = agenthost_factory(
        store=postgres_url, cache=cache_redis.url, app=app, window_cache_mb=window_cache_mb
    )
    other = agenthost_factory(store=postgres_url, app=app)
    sessions = [f"stale-{i}" for i in range(10)]
    async with aiohttp.ClientSession() as http:

        async def alternate(sid: str) -> None:
            acked: dict[str, str] = {}
            for n in range(8):
                # a a b a b b a ... : the cached process runs twice in a row too (a hit)
                base = cached.url if n in (0, 1, 3, 6, 7) else other.url
                tid = f"{sid}-t{n}"
                status, body, _ = await post_turn(http, base, sid, tid, f"m{n}")
                assert status == 200, body
                assert body["response"] == (" ".join(f"{sid}-t{k}" for k in range(n)) or "-")
                acked[tid] = body["response"]
            assert_history_is(await messages_of(http, cached.url, sid), acked)

        await asyncio.gather(*(alternate(s) for s in sessions))
        counts = await cache_counts(http, cached.url)
        if window_cache_mb:
            # Every turn after t0 began from the process's own window, confirmed (or
            # completed with what came after it) by PostgreSQL.
            assert counts["local"] >= 4 * len(sessions) and counts["hit"] == 0
            return
        # t1 and t7 follow the cached process's own commit: hits; t3 and t6 follow the
        # other's: misses (the stale window was refused).
        assert counts["hit"] >= 2 * len(sessions) and counts["miss"] >= 3 * len(sessions)
