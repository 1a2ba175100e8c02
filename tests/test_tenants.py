"""Tenants on a running server: API keys from `agenthost keys`, isolation on every route (404,
never 403), per-key rate limits with their headers, turns in flight, and the admin token."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from tests.fixtures.agenthost import AGENTHOST, AgentHostProcess

ADMIN = "admin-token-for-tests"


def keys_cli(store: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AGENTHOST, "keys", *args, "--store", store],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def create_key(store: str, tenant: str, *limits: str) -> str:
    result = keys_cli(store, "create", "--tenant", tenant, *limits)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert key.startswith("ahk_")
    return key


def test_keys_create_refuses_a_tenant_with_a_trailing_newline(sqlite_store: str) -> None:
    result = keys_cli(sqlite_store, "create", "--tenant", "acme\n")
    assert result.returncode != 0
    assert "a tenant is 1-64 characters" in result.stdout + result.stderr
    listed = keys_cli(sqlite_store, "list")
    assert "acme" not in listed.stdout


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def sqlite_store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tenants.db'}"


async def test_keys_cli_creates_lists_and_revokes_and_the_server_follows(
    agenthost_factory: Callable[..., AgentHostProcess], sqlite_store: str
) -> None:
    key = create_key(sqlite_store, "acme", "--turns-per-minute", "30", "--name", "ci")
    listed = keys_cli(sqlite_store, "list", "--tenant", "acme")
    assert listed.returncode == 0 and "acme" in listed.stdout and key not in listed.stdout
    key_id = key.split("_")[1]
    assert key_id in listed.stdout
    server = agenthost_factory(store=sqlite_store, auth="keys", auth_cache_ttl=0)
    url = f"{server.url}/v1/sessions/s1/turns"
    # A connection each: the revoke below can take longer than the server keeps an idle
    # connection open, and a request sent on one it is closing meets a disconnect.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.post(url, json={"message": "hi"}) as resp:
            assert resp.status == 401
            assert resp.headers["www-authenticate"].startswith("Bearer")
            assert (await resp.json())["error"]["code"] == "unauthorized"
        async with http.post(url, json={"message": "hi"}, headers=bearer(key)) as resp:
            assert resp.status == 200 and (await resp.json())["session_id"] == "s1"
        revoked = keys_cli(sqlite_store, "revoke", key_id)
        assert revoked.returncode == 0, revoked.stderr
        async with http.post(url, json={"message": "hi"}, headers=bearer(key)) as resp:
            assert resp.status == 401
        async with http.get(f"{server.url}/healthz") as resp:
            assert resp.status == 200, "probes need no key"
    assert keys_cli(sqlite_store, "revoke", key_id).returncode == 1
    assert keys_cli("memory://", "list").returncode == 2


async def test_another_tenant_gets_404_on_every_route_and_cannot_touch_the_session(
    agenthost_factory: Callable[..., AgentHostProcess], sqlite_store: str
) -> None:
    a_key, b_key = create_key(sqlite_store, "tenant-a"), create_key(sqlite_store, "tenant-b")
    server = agenthost_factory(store=sqlite_store, auth="keys")
    base = f"{server.url}/v1/sessions/shared-name"
    a, b = bearer(a_key), bearer(b_key)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/turns", json={"message": "a's secret"}, headers={**a, "Idempotency-Key": "t1"}
        ) as resp:
            assert resp.status == 200
        reads = [
            ("GET", base),
            ("GET", f"{base}/messages"),
            ("GET", f"{base}/turns/t1"),
            ("GET", f"{base}/turns/t1/stream"),
            ("DELETE", base),
        ]
        for method, url in reads:
            async with http.request(method, url, headers=b) as resp:
                assert resp.status == 404, (method, url, resp.status)
                assert "a's secret" not in await resp.text()
        # A turn resumed by B under A's turn id is B's own new turn: it never sees A's.
        async with http.post(
            f"{base}/turns",
            json={"message": "b here", "stream": True},
            headers={**b, "Idempotency-Key": "t1", "Last-Event-ID": "0"},
        ) as resp:
            text = await resp.text()
        assert "a's secret" not in text and "b here" in text
        async with http.post(f"{server.url}/chat/shared-name", json={"message": "b2"},
                             headers=b) as resp:  # fmt: skip
            assert resp.status == 200
        async with http.post(f"{server.url}/v1/sessions", json={"session_id": "shared-name"},
                             headers=b) as resp:  # fmt: skip
            assert resp.status == 409, "B's own session of that name exists now"
        async with http.ws_connect(f"{server.url}/v1/sessions/shared-name/ws", headers=b) as ws:
            await ws.send_json({"type": "resume", "turn_id": "t1", "after": 0})
            frame = json.loads((await ws.receive(timeout=10)).data)
            # B's t1 exists (B ran its own above); it carries B's text, never A's.
            assert "a's secret" not in json.dumps(frame)
            await ws.send_json({"type": "resume", "turn_id": "only-a-has-this", "after": 0})
            while frame.get("code") != "turn_not_found":
                frame = json.loads((await ws.receive(timeout=10)).data)
        # A's session is untouched by everything B did.
        async with http.get(f"{base}/messages", headers=a) as resp:
            messages = (await resp.json())["messages"]
        assert messages[0]["content"] == "a's secret" and len(messages) == 2
        async with http.get(f"{base}/messages", headers=b) as resp:
            b_texts = [m["content"] for m in (await resp.json())["messages"]]
        assert "a's secret" not in b_texts and "b here" in b_texts
        async with http.delete(base, headers=a) as resp:
            assert resp.status == 204


async def test_a_websocket_without_a_valid_key_is_closed_with_4401(
    agenthost_factory: Callable[..., AgentHostProcess], sqlite_store: str
) -> None:
    server = agenthost_factory(store=sqlite_store, auth="keys")
    async with aiohttp.ClientSession() as http:
        for headers in ({}, bearer("ahk_nope_nope")):
            async with http.ws_connect(f"{server.url}/v1/sessions/s/ws", headers=headers) as ws:
                first = json.loads((await ws.receive(timeout=10)).data)
                assert first["code"] == "unauthorized"
                await ws.receive(timeout=10)
                assert ws.close_code == 4401


async def ws_turn(ws: aiohttp.ClientWebSocketResponse, turn_id: str) -> dict[str, Any]:
    """Send a turn frame; the `done` or `error` frame it ends with."""
    await ws.send_json({"type": "turn", "message": "hi", "turn_id": turn_id})
    while True:
        frame: dict[str, Any] = json.loads((await ws.receive(timeout=10)).data)
        if frame["type"] in ("done", "error"):
            return frame


async def test_a_revoked_key_stops_working_on_an_open_websocket(
    agenthost_factory: Callable[..., AgentHostProcess], sqlite_store: str
) -> None:
    key = create_key(sqlite_store, "acme")
    server = agenthost_factory(store=sqlite_store, auth="keys", auth_cache_ttl=0.2)
    async with aiohttp.ClientSession() as http:
        url = f"{server.url}/v1/sessions/open-ws/ws"
        async with http.ws_connect(url, headers=bearer(key)) as ws:
            assert (await ws_turn(ws, "before"))["type"] == "done"
            revoked = keys_cli(sqlite_store, "revoke", key.split("_")[1])
            assert revoked.returncode == 0, revoked.stderr
            deadline = time.monotonic() + 10
            turn = 0
            while True:  # within the cache time, the next turn frame is refused
                turn += 1
                frame = await ws_turn(ws, f"after-{turn}")
                if frame["type"] == "error":
                    break
                assert time.monotonic() < deadline, "a revoked key kept working on a WebSocket"
                await asyncio.sleep(0.05)
            assert frame["code"] == "unauthorized"
            assert (await ws.receive(timeout=10)).type == aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 4401
        async with http.get(f"{server.url}/v1/sessions/open-ws/turns/after-{turn}",
                            headers=bearer(create_key(sqlite_store, "acme"))) as resp:  # fmt: skip
            assert resp.status == 404, "the refused turn never ran"


async def test_an_expired_jwt_stops_working_on_an_open_websocket(
    agenthost_factory: Callable[..., AgentHostProcess],
) -> None:
    secret = "s3cret-for-tests-only-32-bytes-long!"
    server = agenthost_factory(auth="jwt", jwt_secret=secret)
    exp = int(time.time()) + 2
    token = jwt.encode({"tenant": "acme", "exp": exp}, secret)
    async with aiohttp.ClientSession() as http:
        url = f"{server.url}/v1/sessions/jwt-ws/ws"
        async with http.ws_connect(url, headers=bearer(token)) as ws:
            assert (await ws_turn(ws, "before"))["type"] == "done"
            deadline = time.monotonic() + 10
            turn = 0
            while True:  # once exp has passed, the next turn frame is refused
                turn += 1
                frame = await ws_turn(ws, f"after-{turn}")
                if frame["type"] == "error":
                    break
                assert time.monotonic() < deadline, "an expired token kept working"
                await asyncio.sleep(0.1)
            assert frame["code"] == "unauthorized"
            assert time.time() >= exp - 0.5, "refused before the token expired"
            assert (await ws.receive(timeout=10)).type == aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 4401


async def test_turns_in_flight_per_tenant_are_bounded(
    agenthost_factory: Callable[..., AgentHostProcess], sqlite_store: str
) -> None:
    key = create_key(sqlite_store, "busy", "--max-inflight", "1")
    server = agenthost_factory(store=sqlite_store, auth="keys", llm="sim://?latency_ms=1500")
    async with aiohttp.ClientSession() as http:

        async def turn(session: str) -> tuple[int, dict[str, Any]]:
            headers = {**bearer(key), "Idempotency-Key": session}
            async with http.post(f"{server.url}/v1/sessions/{session}/turns",
                                 json={"message": "hi"}, headers=headers) as resp:  # fmt: skip
                return resp.status, await resp.json()

        first = asyncio.ensure_future(turn("one"))
        deadline = time.monotonic() + 10
        while True:  # until the first turn runs and holds the tenant's only slot
            async with http.get(f"{server.url}/v1/sessions/one/turns/one",
                                headers=bearer(key)) as resp:  # fmt: skip
                if resp.status == 200 and (await resp.json())["status"] == "running":
                    break
            assert time.monotonic() < deadline, "the first turn never started"
            await asyncio.sleep(0.02)
        status, body = await turn("two")
        assert status == 429, body
        assert body["error"]["code"] == "concurrency_limited"
        assert (await first)[0] == 200
        assert (await turn("three"))[0] == 200, "the slot is free once the turn ends"


@pytest.mark.parametrize("limiter", ["memory", "redis"])
async def test_one_idempotency_key_on_many_sessions_takes_one_slot_per_turn(
    agenthost_factory: Callable[..., AgentHostProcess],
    request: pytest.FixtureRequest,
    limiter: str,
) -> None:
    """Ten simultaneous turns on ten sessions, all with the same Idempotency-Key, are ten
    running turns: with one slot, one runs and nine get 429."""
    rate_limiter = "memory://" if limiter == "memory" else request.getfixturevalue("redis_url")
    server = agenthost_factory(
        llm="sim://?latency_ms=1500", rate_limiter=rate_limiter, rate_limit_max_inflight=1
    )
    async with aiohttp.ClientSession() as http:

        async def turn(session: str) -> int:
            async with http.post(f"{server.url}/v1/sessions/{session}/turns",
                                 json={"message": "hi"},
                                 headers={"Idempotency-Key": "shared"}) as resp:  # fmt: skip
                return resp.status

        sessions = [f"same-key-{uuid.uuid4().hex[:6]}" for _ in range(10)]
        statuses = await asyncio.gather(*(turn(s) for s in sessions))
    assert sorted(statuses) == [200] + [429] * 9, statuses


async def test_metrics_can_require_the_admin_token(
    agenthost_factory: Callable[..., AgentHostProcess],
) -> None:
    server = agenthost_factory(admin_token=ADMIN, metrics_require_admin="true")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/metrics") as resp:
            assert resp.status == 401
        async with http.get(f"{server.url}/metrics", headers=bearer(ADMIN)) as resp:
            assert resp.status == 200 and "agenthost_active_connections" in await resp.text()


def test_serve_refuses_no_auth_with_a_shared_store(redis_url: str) -> None:
    result = subprocess.run(
        [AGENTHOST, "serve", "--store", redis_url, "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode != 0
    assert "--auth none (the default): none is only for the embedded default" in result.stderr


async def test_a_keys_rate_admits_burst_plus_rate_across_two_processes(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str
) -> None:
    """Clients hammering two processes on one Redis for 5 s with a key of 600 turns a minute
    and a burst of 10: GCRA admits the burst at once, then one turn per 0.1 s fleet-wide, so
    10 + 50 = 60 (+- 1) in the window; the same accuracy as 60 turns in a real minute, in a
    twelfth of the time. Each client paces itself at about 200 requests/s."""
    key = create_key(
        redis_url, f"burst-{uuid.uuid4().hex[:6]}", "--turns-per-minute", "600", "--burst", "10"
    )
    servers = [agenthost_factory(store=redis_url, auth="keys") for _ in range(2)]
    window = 5.0
    pace = 0.005
    admitted: list[float] = []
    refused = 0
    headers_seen: dict[str, str] = {}

    async def hammer(http: aiohttp.ClientSession, url: str, start: float) -> None:
        nonlocal refused
        n = 0
        while time.monotonic() - start < window:
            n += 1
            async with http.post(f"{url}/v1/sessions/burst-{n % 7}/turns",
                                 json={"message": "go"}, headers=bearer(key)) as resp:  # fmt: skip
                if resp.status == 200:
                    admitted.append(time.monotonic() - start)
                else:
                    assert resp.status == 429
                    refused += 1
                    headers_seen.update((k.lower(), v) for k, v in resp.headers.items())
            await asyncio.sleep(pace)

    async with aiohttp.ClientSession() as http:
        start = time.monotonic()
        await asyncio.gather(*(hammer(http, s.url, start) for s in servers))
    assert 59 <= len(admitted) <= 61, len(admitted)
    assert refused > 100
    assert headers_seen["ratelimit-policy"] == '"turns";q=600;w=60'
    assert headers_seen["ratelimit"].startswith('"turns";r=0;t=')
    assert int(headers_seen["retry-after"]) == 1


async def test_a_key_created_with_a_rate_lets_a_person_send_a_few_turns_in_a_row(
    agenthost_factory: Callable[..., AgentHostProcess], sqlite_store: str
) -> None:
    """The README's fleet example: `keys create --turns-per-minute 60` and two curls sent one
    after the other. The default burst (10) admits them; the eleventh at once is refused."""
    key = create_key(sqlite_store, "typist", "--turns-per-minute", "60")
    listed = keys_cli(sqlite_store, "list", "--tenant", "typist")
    assert "10" in listed.stdout.split("typist", 1)[1].split("\n", 1)[0]
    server = agenthost_factory(store=sqlite_store, auth="keys")
    statuses = []
    async with aiohttp.ClientSession() as http:
        for n in range(11):
            body = {"message": f"m{n}"}
            async with http.post(f"{server.url}/v1/sessions/s/turns",
                                 json=body, headers=bearer(key)) as resp:  # fmt: skip
                statuses.append(resp.status)
    assert statuses == [200] * 10 + [429], statuses
