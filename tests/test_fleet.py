"""A fleet on one Redis: two real `agenthost serve` processes, crashes and a Redis outage.

These are the claims of the fleet store: simultaneous turns of a session sent to two processes
are all kept once; a process killed mid-turn loses nothing a retry cannot complete; a Redis
outage gives only 503 + Retry-After and service resumes by itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.fixtures.agenthost import AgentHostProcess

pytestmark = pytest.mark.slow

TRANSIENT = (aiohttp.ClientConnectionError, asyncio.TimeoutError)


async def post_turn(
    http: aiohttp.ClientSession,
    base: str,
    session_id: str,
    turn_id: str,
    message: str,
    on_busy: str = "enqueue",
) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with http.post(
        f"{base}/v1/sessions/{session_id}/turns",
        json={"message": message, "on_busy": on_busy},
        headers={"Idempotency-Key": turn_id},
    ) as resp:
        return resp.status, await resp.json(content_type=None), dict(resp.headers)


async def messages_of(
    http: aiohttp.ClientSession, base: str, session_id: str
) -> list[dict[str, Any]]:
    async with http.get(f"{base}/v1/sessions/{session_id}/messages?limit=1000") as resp:
        if resp.status == 404:
            return []
        assert resp.status == 200, await resp.text()
        found: list[dict[str, Any]] = (await resp.json())["messages"]
        return found


def assert_history_is(messages: list[dict[str, Any]], acked: dict[str, str]) -> None:
    """The history holds each acknowledged turn once, as a user/assistant pair with the
    acknowledged answer, and nothing else."""
    assert [m["seq"] for m in messages] == list(range(len(messages)))
    assert len(messages) % 2 == 0, messages
    seen: dict[str, str] = {}
    for user, assistant in zip(messages[::2], messages[1::2], strict=True):
        assert (user["role"], assistant["role"]) == ("user", "assistant")
        assert user["turn_id"] == assistant["turn_id"]
        assert user["turn_id"] not in seen, f"turn {user['turn_id']} appears twice"
        seen[user["turn_id"]] = assistant["content"]
    assert seen == acked


async def test_simultaneous_turns_on_two_processes_are_all_kept_once(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str
) -> None:
    a = agenthost_factory(store=redis_url, llm="sim://?latency_ms=50")
    b = agenthost_factory(store=redis_url, llm="sim://?latency_ms=50")
    sessions = [f"two-{i}" for i in range(500)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000)) as http:

        async def both(sid: str) -> dict[str, str]:
            results = await asyncio.gather(
                post_turn(http, a.url, sid, f"{sid}-a", f"to a {sid}"),
                post_turn(http, b.url, sid, f"{sid}-b", f"to b {sid}"),
            )
            assert [status for status, _, _ in results] == [200, 200], results
            return {body["turn_id"]: body["response"] for _, body, _ in results}

        acked = await asyncio.gather(*(both(s) for s in sessions))
        for sid, turns in zip(sessions, acked, strict=True):
            assert_history_is(await messages_of(http, a.url, sid), turns)


async def test_reject_policy_gives_exactly_one_409_per_session_and_loses_nothing(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str
) -> None:
    # The LLM is slow enough that both turns of a session are in flight together.
    a = agenthost_factory(store=redis_url, llm="sim://?latency_ms=3000")
    b = agenthost_factory(store=redis_url, llm="sim://?latency_ms=3000")
    sessions = [f"rej-{i}" for i in range(500)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000)) as http:

        async def both(sid: str) -> tuple[list[int], dict[str, str]]:
            results = await asyncio.gather(
                post_turn(http, a.url, sid, f"{sid}-a", "a", on_busy="reject"),
                post_turn(http, b.url, sid, f"{sid}-b", "b", on_busy="reject"),
            )
            acked = {body["turn_id"]: body["response"] for s, body, _ in results if s == 200}
            for status, body, _ in results:
                if status == 409:
                    assert body["error"]["code"] == "session_busy"
            return sorted(s for s, _, _ in results), acked

        outcomes = await asyncio.gather(*(both(s) for s in sessions))
        for sid, (statuses, acked) in zip(sessions, outcomes, strict=True):
            assert statuses == [200, 409], (sid, statuses)
            assert_history_is(await messages_of(http, b.url, sid), acked)


async def test_killed_process_turns_complete_exactly_once_on_retry_elsewhere(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str
) -> None:
    # The victim's model never answers before the kill, so all 100 turns are seen running
    # together however slowly the machine lets this test poll them; the survivor's is quick.
    victim = agenthost_factory(store=redis_url, llm="sim://?latency_ms=60000", lease_ttl=1.0)
    survivor = agenthost_factory(store=redis_url, llm="sim://?latency_ms=1500", lease_ttl=1.0)
    turns = [(f"crash-{i}", f"crash-{i}-t") for i in range(100)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=300)) as http:

        async def until_answered(sid: str, tid: str) -> tuple[str, str, int]:
            """Send to the victim; on a dropped connection retry with the same key on the
            survivor, as a client behind a load balancer would."""
            tries = 0
            for base in [victim.url] + [survivor.url] * 20:
                tries += 1
                try:
                    status, body, headers = await post_turn(http, base, sid, tid, f"msg {sid}")
                except TRANSIENT:
                    continue
                if status == 200:
                    return tid, body["response"], tries
                assert status in (409, 503), (status, body)
                await asyncio.sleep(float(headers.get("Retry-After", "1")))
            raise AssertionError(f"turn {tid} never answered")

        tasks = [asyncio.create_task(until_answered(s, t)) for s, t in turns]

        async def running_on_victim() -> int:
            count = 0
            for sid, tid in turns:
                async with http.get(f"{survivor.url}/v1/sessions/{sid}/turns/{tid}") as resp:
                    if resp.status == 200 and (await resp.json())["status"] == "running":
                        count += 1
            return count

        deadline = time.monotonic() + 20
        while await running_on_victim() < len(turns):
            assert time.monotonic() < deadline, "turns never all started on the victim"
        victim.kill()
        results = await asyncio.gather(*tasks)
        assert all(tries > 1 for _, _, tries in results), "every turn was cut by the kill"
        for (sid, _), (tid, response, _) in zip(turns, results, strict=True):
            assert_history_is(await messages_of(http, survivor.url, sid), {tid: response})


async def test_redis_outage_gives_only_503_and_service_resumes_within_two_seconds(
    agenthost_factory: Callable[..., AgentHostProcess], durable_redis: Any
) -> None:
    server = agenthost_factory(store=durable_redis.url, llm="sim://", lease_ttl=1.0)
    outage_s = 10.0
    clients = 20
    acked: dict[str, dict[str, str]] = {f"outage-{i}": {} for i in range(clients)}
    statuses: list[tuple[str, int]] = []  # (phase, status)
    phase = "before"
    stop_at = time.monotonic() + 60  # every loop below is bounded in time

    async with aiohttp.ClientSession() as http:

        async def client(sid: str) -> None:
            n = 0
            while phase != "done" and time.monotonic() < stop_at:
                tid = f"{sid}-{n}"
                sent_in = phase
                try:
                    status, body, headers = await post_turn(http, server.url, sid, tid, "m")
                except TRANSIENT:
                    status, body, headers = -1, {}, {}
                # A request that spans a phase change is counted in neither phase.
                statuses.append((sent_in if sent_in == phase else "transition", status))
                if status == -1:
                    continue
                if status == 200:
                    acked[sid][tid] = body["response"]
                    n += 1
                else:
                    assert status == 503, (status, body)
                    assert "Retry-After" in headers
                    # A short pause, not the whole Retry-After: we want to see the recovery.
                    await asyncio.sleep(0.05)

        tasks = [asyncio.create_task(client(s)) for s in acked]
        deadline = time.monotonic() + 10
        while sum(1 for p, s in statuses if p == "before" and s == 200) < 200:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        durable_redis.stop()
        phase = "outage"
        await asyncio.sleep(outage_s)  # the outage itself lasts this long, under load
        durable_redis.start()
        phase = "after"
        restarted = time.monotonic()
        recovered_at = None
        while recovered_at is None:
            assert time.monotonic() - restarted < 10, "no recovery"
            if any(p == "after" and s == 200 for p, s in statuses):
                recovered_at = time.monotonic()
            await asyncio.sleep(0.02)
        phase = "done"
        await asyncio.gather(*tasks)

        assert recovered_at - restarted <= 2.0
        outage = [s for p, s in statuses if p == "outage"]
        assert outage and set(outage) <= {503}, set(outage)
        for sid, turns in acked.items():
            assert_history_is(await messages_of(http, server.url, sid), turns)


async def test_interrupt_cancels_the_turn_running_on_another_process(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str
) -> None:
    a = agenthost_factory(store=redis_url, llm="sim://?latency_ms=20000")
    b = agenthost_factory(store=redis_url, llm="sim://")
    async with aiohttp.ClientSession() as http:
        slow = asyncio.create_task(post_turn(http, a.url, "intr", "slow-turn", "slow"))
        deadline = time.monotonic() + 10
        while True:
            async with http.get(f"{b.url}/v1/sessions/intr/turns/slow-turn") as resp:
                if resp.status == 200 and (await resp.json())["status"] == "running":
                    break
            assert time.monotonic() < deadline, "the slow turn never started"
            await asyncio.sleep(0.02)
        status, body, _ = await post_turn(http, b.url, "intr", "fast-turn", "fast", "interrupt")
        assert status == 200, body
        slow_status, slow_body, _ = await asyncio.wait_for(slow, 10)
        assert slow_status == 409 and slow_body["error"]["code"] == "interrupted"
        async with http.get(f"{b.url}/v1/sessions/intr/turns/slow-turn") as resp:
            record = await resp.json()
        assert record["status"] == "failed" and record["error"]["code"] == "interrupted"
        assert_history_is(await messages_of(http, b.url, "intr"), {"fast-turn": body["response"]})
