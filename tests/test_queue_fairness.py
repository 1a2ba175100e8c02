"""Fairness across tenants through real api and worker processes: one tenant's flood of
queued turns delays another tenant's single turn by about one turn per worker slot, a
tenant past `--max-queued-turns` gets 429 while others do not, and a worker runs at most
`--worker-concurrency` turns at once."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt

from tests.fixtures.agenthost import AgentHostProcess
from tests.test_stream_resume import sid

Factory = Callable[..., AgentHostProcess]
SECRET = "fairness-test-secret-of-32-bytes!"


def as_tenant(tenant: str) -> dict[str, str]:
    token = jwt.encode({"tenant": tenant, "exp": int(time.time()) + 3600}, SECRET)
    return {"Authorization": f"Bearer {token}"}


def settings(redis_url: str, **more: Any) -> dict[str, Any]:
    return {"store": redis_url, "auth": "jwt", "jwt_secret": SECRET, **more}


async def background(
    http: aiohttp.ClientSession, base: str, tenant: str, session: str
) -> tuple[int, dict[str, Any]]:
    async with http.post(
        f"{base}/v1/sessions/{session}/turns",
        json={"message": "hi", "background": True},
        headers=as_tenant(tenant),
    ) as resp:
        body: dict[str, Any] = await resp.json()
        return resp.status, body


async def answered_at(http: aiohttp.ClientSession, base: str, tenant: str, session: str) -> float:
    """When the session's answer was committed (its assistant message's time); polls."""
    found: list[float] = []

    async def check() -> None:
        async with http.get(
            f"{base}/v1/sessions/{session}/messages", headers=as_tenant(tenant)
        ) as resp:
            if resp.status == 200:
                found.extend(
                    m["created_at"] for m in (await resp.json())["messages"]
                    if m["role"] == "assistant"
                )  # fmt: skip

    deadline = asyncio.get_running_loop().time() + 120
    while not found:
        assert asyncio.get_running_loop().time() < deadline, f"no answer in {session}"
        await check()
        if not found:
            await asyncio.sleep(0.1)
    return found[0]


async def test_a_flood_of_one_tenant_delays_anothers_turn_by_one_turn_per_slot(
    agenthost_factory: Factory, redis_url: str
) -> None:
    common = settings(redis_url, llm="sim://?latency_ms=150")
    api = agenthost_factory(role="api", **common)
    flood = [sid() for _ in range(30)]
    async with aiohttp.ClientSession() as http:
        for session in flood:
            assert (await background(http, api.url, "flood", session))[0] == 202
        lone = sid()
        assert (await background(http, api.url, "lone", lone))[0] == 202
        # The worker starts once every turn is queued: how many flood turns it takes before
        # the lone one depends on the queue's order alone, not on how fast the posts went
        # (with a worker already running, a slow machine let it take several meanwhile).
        agenthost_factory(role="worker", worker_concurrency=1, **common)
        lone_at = await answered_at(http, api.url, "lone", lone)
        flood_at = [await answered_at(http, api.url, "flood", s) for s in flood]
    before = sum(1 for at in flood_at if at < lone_at)
    # Served round-robin: at most the one flood turn the worker's first take found first.
    assert before <= 1, f"{before} of the flood's turns ran before the other tenant's one"
    assert sorted(flood_at) == flood_at, "one tenant's turns run in the order they came"


async def test_a_tenant_past_its_queued_turn_limit_gets_429_and_others_do_not(
    agenthost_factory: Factory, redis_url: str
) -> None:
    # No worker: every turn stays queued.
    api = agenthost_factory(role="api", max_queued_turns=3, **settings(redis_url))
    async with aiohttp.ClientSession() as http:
        statuses = [(await background(http, api.url, "busy", sid()))[0] for _ in range(3)]
        assert statuses == [202, 202, 202]
        async with http.post(
            f"{api.url}/v1/sessions/{sid()}/turns",
            json={"message": "one more", "background": True},
            headers=as_tenant("busy"),
        ) as resp:
            assert resp.status == 429
            assert (await resp.json())["error"]["code"] == "queue_full"
            assert "Retry-After" in resp.headers
        assert (await background(http, api.url, "calm", sid()))[0] == 202


async def test_a_worker_runs_at_most_its_concurrency_at_once(
    agenthost_factory: Factory, redis_url: str
) -> None:
    common = settings(redis_url, llm="sim://?latency_ms=400")
    api = agenthost_factory(role="api", **common)
    worker = agenthost_factory(role="worker", worker_concurrency=2, **common)
    seen: list[int] = []
    sessions = [sid() for _ in range(6)]
    async with aiohttp.ClientSession() as http:
        for session in sessions:
            await background(http, api.url, "acme", session)

        async def busy() -> int:
            async with http.get(f"{worker.url}/metrics") as resp:
                text = await resp.text()
            match = re.search(r"^agenthost_worker_busy (\d+)$", text, re.M)
            assert match is not None
            return int(match[1])

        async def sample_until_done() -> None:
            for session in sessions:
                while True:
                    seen.append(await busy())
                    async with http.get(
                        f"{api.url}/v1/sessions/{session}/messages", headers=as_tenant("acme")
                    ) as resp:
                        if resp.status == 200 and len((await resp.json())["messages"]) == 2:
                            break

        await asyncio.wait_for(sample_until_done(), 120)
    assert max(seen) == 2, seen
