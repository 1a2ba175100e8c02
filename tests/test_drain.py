"""Drain on real processes: SIGTERM and POST /admin/drain let in-flight turns commit, refuse
new ones with 503 + Retry-After, then exit; a turn past the drain timeout is released so a
retry elsewhere completes it; a second SIGTERM exits at once. And the metrics to scale on."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
from starlette.testclient import TestClient

from agenthost.core.settings import Settings
from agenthost.runtime.assembly import build_app
from tests.fixtures.agenthost import AgentHostProcess
from tests.test_fleet import post_turn

TOKEN = "s3cret-admin"


async def wait_running(http: aiohttp.ClientSession, base: str, sid: str, tid: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        async with http.get(f"{base}/v1/sessions/{sid}/turns/{tid}") as resp:
            if resp.status == 200 and (await resp.json())["status"] == "running":
                return
        assert time.monotonic() < deadline, f"{tid} never started"
        await asyncio.sleep(0.02)


async def wait_exit(server: AgentHostProcess, timeout: float) -> int:
    assert server.proc is not None
    deadline = time.monotonic() + timeout
    while (code := server.proc.poll()) is None:
        assert time.monotonic() < deadline, "the process did not exit"
        await asyncio.sleep(0.05)
    return code


async def drain_while_turns_run(
    server: AgentHostProcess, start_drain: Callable[[], object]
) -> None:
    async with aiohttp.ClientSession() as http:
        turns = [
            asyncio.create_task(post_turn(http, server.url, f"d{i}", f"d{i}-t", "m"))
            for i in range(5)
        ]
        for i in range(5):
            await wait_running(http, server.url, f"d{i}", f"d{i}-t")
        result = start_drain()
        if asyncio.iscoroutine(result):
            await result
        async with http.get(f"{server.url}/readyz") as resp:
            assert resp.status == 503
        status, body, headers = await post_turn(http, server.url, "late", "late-t", "m")
        assert status == 503 and body["error"]["code"] == "draining"
        assert headers["Retry-After"] == "1"
        answered = await asyncio.gather(*turns)
        assert [status for status, _, _ in answered] == [200] * 5
    assert await wait_exit(server, 15) == 0


async def test_sigterm_lets_in_flight_turns_commit_then_exits(
    agenthost_factory: Callable[..., AgentHostProcess],
) -> None:
    server = agenthost_factory(llm="sim://?latency_ms=1500")
    await drain_while_turns_run(server, lambda: server.proc.send_signal(signal.SIGTERM))  # type: ignore[union-attr]


async def test_admin_drain_needs_the_token_and_drains(
    agenthost_factory: Callable[..., AgentHostProcess],
) -> None:
    server = agenthost_factory(llm="sim://?latency_ms=1500", admin_token=TOKEN)
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            async with http.post(f"{server.url}/admin/drain", headers=headers) as resp:
                assert resp.status == 401
                assert (await resp.json())["error"]["code"] == "unauthorized"

    async def drain() -> None:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{server.url}/admin/drain", headers={"Authorization": f"Bearer {TOKEN}"}
            ) as resp,
        ):
            assert resp.status == 202

    await drain_while_turns_run(server, drain)


async def test_drain_timeout_releases_the_turn_for_a_retry_elsewhere(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str
) -> None:
    slow = agenthost_factory(store=redis_url, llm="sim://?latency_ms=30000", drain_timeout=0.5)
    other = agenthost_factory(store=redis_url, llm="sim://")
    async with aiohttp.ClientSession() as http:
        turn = asyncio.create_task(post_turn(http, slow.url, "dt", "dt-1", "keep me"))
        await wait_running(http, other.url, "dt", "dt-1")
        slow.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        status, body, _ = await turn
        assert status == 409 and body["error"]["code"] == "interrupted"
        async with http.get(f"{other.url}/v1/sessions/dt/turns/dt-1") as resp:
            record = await resp.json()
        assert record["status"] == "failed" and record["error"]["code"] == "interrupted"
        status, body, _ = await post_turn(http, other.url, "dt", "dt-1", "keep me")
        assert status == 200 and "keep me" in body["response"]
    assert await wait_exit(slow, 15) == 0


async def test_a_second_sigterm_exits_at_once(
    agenthost_factory: Callable[..., AgentHostProcess],
) -> None:
    server = agenthost_factory(llm="sim://?latency_ms=30000", drain_timeout=60)
    async with aiohttp.ClientSession() as http:
        turn = asyncio.create_task(post_turn(http, server.url, "twice", "twice-t", "m"))
        await wait_running(http, server.url, "twice", "twice-t")
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        async with http.get(f"{server.url}/readyz") as resp:
            assert resp.status == 503
        t0 = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        await wait_exit(server, 10)
        assert time.monotonic() - t0 < 10
        turn.cancel()


def test_metrics_expose_the_signals_to_scale_on(tmp_path: Path) -> None:
    settings = Settings(llm="sim://", store=f"sqlite:///{tmp_path / 'm.db'}")
    with TestClient(build_app(settings)) as client:
        for _ in range(3):  # the same request: one run, then two replays
            client.post(
                "/v1/sessions/m/turns", json={"message": "0"}, headers={"Idempotency-Key": "k"}
            )
        text = client.get("/metrics").text
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert lines['agenthost_turns_total{outcome="completed"}'] == "1"
    assert lines['agenthost_turns_total{outcome="replayed"}'] == "2"
    assert lines["agenthost_inflight_turns"] == "0"
    assert lines["agenthost_active_connections"] == "0"
    assert lines["agenthost_draining"] == "0"
    assert lines["agenthost_turn_duration_seconds_count"] == "3"
    assert lines['agenthost_turn_duration_seconds_bucket{le="+Inf"}'] == "3"
    assert "# TYPE agenthost_turn_duration_seconds histogram" in text
