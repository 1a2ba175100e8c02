"""What `--role api` answers when a turn meets a busy session, is cancelled while queued, or
loses its session while queued: the same as `--role all`, on a real redis-server and on
PostgreSQL (whose queue is a table). A refused turn is never queued, a withdrawn one never
runs, and every stream a reader holds ends."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from agenthost.queue import create_queue
from tests.fixtures.agenthost import AgentHostProcess
from tests.test_stream_resume import read_events, sid

Factory = Callable[..., AgentHostProcess]
LONG_LLM = "sim://?ttft_ms=50&tokens_per_s=10&words=50"  # about 5 s a turn
LONG = "long-1"


@pytest.fixture(params=["redis", "postgres"])
def store(request: pytest.FixtureRequest) -> dict[str, str]:
    """The store (and so the queue) the processes share, with a Redis broker."""
    redis_url: str = request.getfixturevalue("redis_url")
    if request.param == "redis":
        return {"store": redis_url}
    return {"store": request.getfixturevalue("postgres_url"), "broker": redis_url}


def start(factory: Factory, role: str, store: dict[str, str], **settings: Any) -> str:
    """`--role all`, or an api process with one worker: the url clients talk to."""
    common = {**store, "llm": LONG_LLM, "chunk_coalesce_ms": 0, **settings}
    if role == "all":
        return factory(**common).url
    api = factory(role="api", **common)
    factory(role="worker", **common)
    return api.url


async def status_of(http: aiohttp.ClientSession, url: str) -> str | None:
    async with http.get(url) as resp:
        return None if resp.status == 404 else str((await resp.json())["status"])


async def run_long_turn(http: aiohttp.ClientSession, url: str, s: str) -> None:
    """A background turn of about 5 s on session `s`, running when this returns."""
    async with http.post(
        f"{url}/v1/sessions/{s}/turns",
        json={"message": "a long story", "background": True},
        headers={"Idempotency-Key": LONG},
    ) as resp:
        assert resp.status == 202, await resp.text()
    deadline = asyncio.get_running_loop().time() + 30
    while await status_of(http, f"{url}/v1/sessions/{s}/turns/{LONG}") != "running":
        assert asyncio.get_running_loop().time() < deadline, "the long turn never ran"
        await asyncio.sleep(0.05)


async def history(http: aiohttp.ClientSession, url: str, s: str) -> list[tuple[str, str]] | None:
    async with http.get(f"{url}/v1/sessions/{s}/messages") as resp:
        if resp.status == 404:
            return None
        return [(m["role"], m["turn_id"]) for m in (await resp.json())["messages"]]


async def wait_for_history(
    http: aiohttp.ClientSession, url: str, s: str, expected: list[tuple[str, str]] | None
) -> None:
    deadline = asyncio.get_running_loop().time() + 60
    while (found := await history(http, url, s)) != expected:
        assert asyncio.get_running_loop().time() < deadline, found
        await asyncio.sleep(0.1)


async def refusals(url: str) -> dict[str, Any]:
    """Every way a client sends an on_busy=reject turn to a busy session, and what it got."""
    s = sid()
    base = f"{url}/v1/sessions/{s}/turns"
    got: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        await run_long_turn(http, url, s)
        for name, extra in (("json", {}), ("sse", {"stream": True}),
                            ("background", {"background": True})):  # fmt: skip
            body = {"message": "now", "on_busy": "reject", **extra}
            async with http.post(base, json=body, headers={"Idempotency-Key": name}) as resp:
                got[name] = (resp.status, resp.content_type, await resp.json())
        ws_url = f"{url.replace('http', 'ws', 1)}/v1/sessions/{s}/ws"
        async with http.ws_connect(ws_url) as ws:
            await ws.send_json(
                {"type": "turn", "message": "now", "turn_id": "ws", "on_busy": "reject"}
            )
            got["websocket"] = await ws.receive_json(timeout=30)
        # None of them ran or stays queued: the session holds the long turn alone.
        await wait_for_history(http, url, s, [("user", LONG), ("assistant", LONG)])
        for name in ("json", "sse", "background", "ws"):
            assert await status_of(http, f"{base}/{name}") is None, name
    return got


@pytest.mark.slow
async def test_a_reject_to_a_busy_session_answers_through_the_queue_as_with_role_all(
    agenthost_factory: Factory, store: dict[str, str]
) -> None:
    alone = await refusals(start(agenthost_factory, "all", store))
    queued = await refusals(start(agenthost_factory, "api", store))
    assert queued == alone
    for name in ("json", "sse", "background"):
        status, kind, body = queued[name]
        assert (status, kind) == (409, "application/json"), name
        assert body == {"error": {"code": "session_busy",
                                  "message": f"this session is running turn {LONG}"}}  # fmt: skip
    assert queued["websocket"] == {"type": "error", "turn_id": "ws", "seq": 1,
                                   "code": "session_busy",
                                   "message": f"this session is running turn {LONG}"}  # fmt: skip


async def queue_depth(store: dict[str, str]) -> int:
    queue = create_queue(store["store"], claim_after=10.0)
    await queue.open()
    try:
        return (await queue.stats()).depth
    finally:
        await queue.close()


async def wait_for_empty_queue(store: dict[str, str]) -> None:
    deadline = asyncio.get_running_loop().time() + 60
    while (depth := await queue_depth(store)) != 0:
        assert asyncio.get_running_loop().time() < deadline, f"{depth} turns left on the queue"
        await asyncio.sleep(0.2)


async def streams_open(http: aiohttp.ClientSession, url: str, count: int) -> None:
    """Wait until the process at `url` serves `count` event streams (its readers are in)."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        async with http.get(f"{url}/metrics") as resp:
            text = await resp.text()
        found = re.search(r"^agenthost_active_connections (\d+)", text, re.M)
        if found and int(found.group(1)) >= count:
            return
        assert asyncio.get_running_loop().time() < deadline, "the readers never came"
        await asyncio.sleep(0.05)


async def final_event(http: aiohttp.ClientSession, url: str) -> tuple[str, dict[str, Any]]:
    """The last event of a turn's stream, read with GET .../stream (from event 0)."""
    async with http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        events = await read_events(resp)
    assert events, "the stream ended with no event"
    _, kind, data = events[-1]
    return kind, data


@pytest.mark.parametrize("concurrency", [1, 2], ids=["queued", "held-by-a-worker"])
async def test_cancel_reaches_a_queued_turn_before_it_runs(
    agenthost_factory: Factory, store: dict[str, str], concurrency: int
) -> None:
    # One slot: the cancelled turn is still on the queue; two: a worker took it and waits
    # for the session's running turn.
    url = start(agenthost_factory, "api", store, worker_concurrency=concurrency)
    s = sid()
    turns = f"{url}/v1/sessions/{s}/turns"
    async with aiohttp.ClientSession() as http:
        await run_long_turn(http, url, s)
        client = await http.post(
            turns,
            json={"message": "next", "stream": True, "on_disconnect": "cancel"},
            headers={"Idempotency-Key": "next-1"},
        )
        assert client.status == 200
        # Another reader follows the queued turn's stream; then the client leaves.
        follower = asyncio.ensure_future(final_event(http, f"{turns}/next-1/stream"))
        await streams_open(http, url, 2)
        client.close()
        kind, data = await asyncio.wait_for(follower, 30)
        assert kind == "error" and data["code"] == "interrupted", data
        # Nothing of it is committed, it never runs, and it is off the queue.
        await wait_for_history(http, url, s, [("user", LONG), ("assistant", LONG)])
        assert await status_of(http, f"{turns}/next-1") is None
        await wait_for_empty_queue(store)


async def test_deleting_a_session_withdraws_its_queued_turns(
    agenthost_factory: Factory, store: dict[str, str]
) -> None:
    # Two slots: the second turn is held by the worker, the third still on the queue.
    url = start(agenthost_factory, "api", store, worker_concurrency=2)
    s = sid()
    turns = f"{url}/v1/sessions/{s}/turns"
    async with aiohttp.ClientSession() as http:
        await run_long_turn(http, url, s)
        for tid in ("held", "queued"):
            async with http.post(
                turns, json={"message": tid, "background": True}, headers={"Idempotency-Key": tid}
            ) as resp:
                assert resp.status == 202
        followers = [
            asyncio.ensure_future(final_event(http, f"{turns}/{tid}/stream"))
            for tid in (LONG, "held", "queued")
        ]
        await streams_open(http, url, 3)
        async with http.delete(f"{url}/v1/sessions/{s}") as resp:
            assert resp.status == 204
        ends = await asyncio.wait_for(asyncio.gather(*followers), 60)
        assert [kind for kind, _ in ends] == ["error"] * 3, ends
        assert ends[1][1]["code"] == ends[2][1]["code"] == "interrupted"
        # No worker ran them (a turn would make the session again), and the queue is empty.
        await wait_for_empty_queue(store)
        assert await history(http, url, s) is None
        for tid in (LONG, "held", "queued"):
            assert await status_of(http, f"{turns}/{tid}") is None, tid


async def test_a_turn_interrupted_on_a_worker_runs_when_sent_again(
    agenthost_factory: Factory, redis_url: str
) -> None:
    # The worker remembers interrupts of turns it does not hold yet; one its engine ran and
    # interrupted is not among them, so sending that turn again runs it.
    url = start(agenthost_factory, "api", {"store": redis_url})
    s = sid()
    turns = f"{url}/v1/sessions/{s}/turns"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            turns,
            json={"message": "a story", "stream": True, "on_disconnect": "cancel"},
            headers={"Idempotency-Key": "again-1"},
        ) as resp:
            await read_events(resp, stop_after=2)  # it runs; then the client leaves
        deadline = asyncio.get_running_loop().time() + 30
        while await status_of(http, f"{turns}/again-1") != "failed":
            assert asyncio.get_running_loop().time() < deadline, "never interrupted"
            await asyncio.sleep(0.05)
        async with http.post(
            turns, json={"message": "a story"}, headers={"Idempotency-Key": "again-1"}
        ) as resp:
            body = await resp.json()
            assert resp.status == 200, body
        assert body["response"]
        await wait_for_history(http, url, s, [("user", "again-1"), ("assistant", "again-1")])
