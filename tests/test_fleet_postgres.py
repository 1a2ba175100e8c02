"""A fleet on one PostgreSQL: real `agenthost serve` processes, a PostgreSQL of the test's own
stopped under load and restarted mid-turn, a process killed mid-turn, and simultaneous turns
and interrupts across processes (LISTEN/NOTIFY).

The claims are those of the Redis fleet (tests/test_fleet.py): an outage gives only 503 +
Retry-After and service resumes by itself within 2 s; a turn cut by a restart or a crash is
completed once by a retry with the same Idempotency-Key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import pytest

from tests.fixtures.agenthost import AgentHostProcess
from tests.fixtures.postgres import PostgresServer
from tests.test_fleet import TRANSIENT, assert_history_is, messages_of, post_turn

pytestmark = pytest.mark.slow

# A short connect timeout, so a request during an outage answers 503 promptly.
PG_OPTIONS = "?connect_timeout=0.5&command_timeout=2"


async def until_answered(
    http: aiohttp.ClientSession,
    bases: list[str],
    sid: str,
    tid: str,
    within: float = 30,
    refused: list[str] | None = None,
) -> tuple[str, int]:
    """Send the turn, retrying with the same key (on the next base, if several) on a dropped
    connection, a 409 or a 503, as a client behind a load balancer would: its answer and
    how many tries it took."""
    deadline = time.monotonic() + within
    tries = 0
    while time.monotonic() < deadline:
        base = bases[min(tries, len(bases) - 1)]
        tries += 1
        try:
            status, body, headers = await post_turn(http, base, sid, tid, f"msg {sid}")
        except TRANSIENT:
            continue
        if status == 200:
            return body["response"], tries
        assert status in (409, 503), (status, body)
        assert status == 409 or "Retry-After" in headers
        if refused is not None:
            refused.append(tid)
        await asyncio.sleep(0.1)
    raise AssertionError(f"turn {tid} never answered")


async def test_simultaneous_turns_on_two_processes_are_all_kept_once(
    agenthost_factory: Callable[..., AgentHostProcess], postgres_url: str
) -> None:
    a = agenthost_factory(store=postgres_url, llm="sim://?latency_ms=50")
    b = agenthost_factory(store=postgres_url, llm="sim://?latency_ms=50")
    sessions = [f"two-{i}" for i in range(200)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=500)) as http:

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


async def test_postgres_outage_gives_only_503_and_service_resumes_within_two_seconds(
    agenthost_factory: Callable[..., AgentHostProcess], own_postgres: PostgresServer
) -> None:
    url = own_postgres.create_database() + PG_OPTIONS
    server = agenthost_factory(store=url, llm="sim://", lease_ttl=1.0)
    outage_s = 5.0
    acked: dict[str, dict[str, str]] = {f"outage-{i}": {} for i in range(20)}
    statuses: list[tuple[str, int]] = []  # (phase, status)
    phase = "before"
    stop_at = time.monotonic() + 60

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
                statuses.append((sent_in if sent_in == phase else "transition", status))
                if status == -1:
                    continue
                if status == 200:
                    acked[sid][tid] = body["response"]
                    n += 1
                else:
                    assert status == 503, (status, body)
                    assert "Retry-After" in headers
                    await asyncio.sleep(0.05)

        tasks = [asyncio.create_task(client(s)) for s in acked]
        deadline = time.monotonic() + 20
        while sum(1 for p, s in statuses if p == "before" and s == 200) < 200:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.to_thread(own_postgres.stop)
        phase = "outage"
        await asyncio.sleep(outage_s)  # the outage lasts this long, under load
        async with http.get(f"{server.url}/readyz") as resp:
            assert resp.status == 503
        phase = "restarting"  # answers while PostgreSQL starts count in neither phase
        await asyncio.to_thread(own_postgres.start)
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


async def test_a_primary_restart_mid_turn_leaves_the_turn_retryable_and_committed_once(
    agenthost_factory: Callable[..., AgentHostProcess], own_postgres: PostgresServer
) -> None:
    url = own_postgres.create_database() + PG_OPTIONS
    server = agenthost_factory(store=url, llm="sim://?latency_ms=1000", lease_ttl=1.0)
    turns = [(f"restart-{i}", f"restart-{i}-t") for i in range(30)]
    refused: list[str] = []
    async with aiohttp.ClientSession() as http:
        tasks = [
            asyncio.create_task(until_answered(http, [server.url], s, t, refused=refused))
            for s, t in turns
        ]

        async def all_running() -> bool:
            for sid, tid in turns:
                async with http.get(f"{server.url}/v1/sessions/{sid}/turns/{tid}") as resp:
                    if resp.status != 200 or (await resp.json())["status"] != "running":
                        return False
            return True

        deadline = time.monotonic() + 20
        while not await all_running():
            assert time.monotonic() < deadline, "the turns never all started"
        # The agents are running; PostgreSQL goes down under them and stays down until
        # every turn's commit has been refused, then comes back.
        await asyncio.to_thread(own_postgres.stop)
        deadline = time.monotonic() + 20
        while {tid for _, tid in turns} - set(refused):
            assert time.monotonic() < deadline, "not every commit met the outage"
            await asyncio.sleep(0.05)
        await asyncio.to_thread(own_postgres.start)
        results = await asyncio.gather(*tasks)
        assert all(tries > 1 for _, tries in results)
        for (sid, tid), (response, _) in zip(turns, results, strict=True):
            assert_history_is(await messages_of(http, server.url, sid), {tid: response})


async def test_a_quick_primary_restart_under_running_turns_loses_nothing(
    agenthost_factory: Callable[..., AgentHostProcess], own_postgres: PostgresServer
) -> None:
    """A restart shorter than the agents' work: the leases are in PostgreSQL, so they
    survive it, and each turn commits once when its agent is done."""
    url = own_postgres.create_database() + PG_OPTIONS
    server = agenthost_factory(store=url, llm="sim://?latency_ms=1500", lease_ttl=3.0)
    turns = [(f"quick-{i}", f"quick-{i}-t") for i in range(30)]
    async with aiohttp.ClientSession() as http:
        tasks = [asyncio.create_task(until_answered(http, [server.url], s, t)) for s, t in turns]

        async def all_running() -> bool:
            for sid, tid in turns:
                async with http.get(f"{server.url}/v1/sessions/{sid}/turns/{tid}") as resp:
                    if resp.status != 200 or (await resp.json())["status"] != "running":
                        return False
            return True

        deadline = time.monotonic() + 20
        while not await all_running():
            assert time.monotonic() < deadline, "the turns never all started"
        await asyncio.to_thread(own_postgres.stop)
        await asyncio.to_thread(own_postgres.start)
        results = await asyncio.gather(*tasks)
        for (sid, tid), (response, _) in zip(turns, results, strict=True):
            assert_history_is(await messages_of(http, server.url, sid), {tid: response})


async def test_killed_process_turns_complete_exactly_once_on_retry_elsewhere(
    agenthost_factory: Callable[..., AgentHostProcess], postgres_url: str
) -> None:
    settings = {"store": postgres_url, "llm": "sim://?latency_ms=1500", "lease_ttl": 1.0}
    victim = agenthost_factory(**settings)
    survivor = agenthost_factory(**settings)
    turns = [(f"crash-{i}", f"crash-{i}-t") for i in range(50)]
    async with aiohttp.ClientSession() as http:
        tasks = [
            asyncio.create_task(until_answered(http, [victim.url, survivor.url], s, t))
            for s, t in turns
        ]

        async def running() -> int:
            count = 0
            for sid, tid in turns:
                async with http.get(f"{survivor.url}/v1/sessions/{sid}/turns/{tid}") as resp:
                    if resp.status == 200 and (await resp.json())["status"] == "running":
                        count += 1
            return count

        deadline = time.monotonic() + 20
        while await running() < len(turns):
            assert time.monotonic() < deadline, "turns never all started on the victim"
        victim.kill()
        results = await asyncio.gather(*tasks)
        assert all(tries > 1 for _, tries in results), "every turn was cut by the kill"
        for (sid, tid), (response, _) in zip(turns, results, strict=True):
            assert_history_is(await messages_of(http, survivor.url, sid), {tid: response})


async def test_interrupt_cancels_the_turn_running_on_another_process(
    agenthost_factory: Callable[..., AgentHostProcess], postgres_url: str
) -> None:
    a = agenthost_factory(store=postgres_url, llm="sim://?latency_ms=20000")
    b = agenthost_factory(store=postgres_url, llm="sim://")
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
        assert_history_is(await messages_of(http, b.url, "intr"), {"fast-turn": body["response"]})
