"""What an error tells a client, on real processes: never a tenant-scoped session id, never
the agent's exception text (unless --detailed-errors), and a busy session is a 409 status on
every route, a streamed POST included."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agenthost.turns.agents import Turn
from tests.fixtures.agenthost import AGENTHOST, AgentHostProcess

REPO_ROOT = Path(__file__).resolve().parent.parent
SECRET_TEXT = "agent exploded on purpose"


async def exploding_agent(turn: Turn) -> str:
    raise RuntimeError(SECRET_TEXT)


def create_key(store: str, tenant: str) -> str:
    result = subprocess.run(
        [AGENTHOST, "keys", "create", "--tenant", tenant, "--store", store],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


async def sse_events(resp: aiohttp.ClientResponse) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    for block in (await resp.text()).split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


@pytest.mark.parametrize("detailed", [False, True])
async def test_an_agent_failure_shows_the_client_a_stable_message_with_the_turn_id(
    agenthost_factory: Callable[..., AgentHostProcess],
    monkeypatch: pytest.MonkeyPatch,
    detailed: bool,
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    server = agenthost_factory(
        app="tests.test_errors:exploding_agent", detailed_errors=str(detailed).lower()
    )
    seen: list[str] = []
    async with aiohttp.ClientSession() as http:
        url = f"{server.url}/v1/sessions/boom/turns"
        async with http.post(url, json={"message": "hi"}, headers={"Idempotency-Key": "t-1"}) as r:
            assert r.status == 502
            error = (await r.json())["error"]
            assert error["code"] == "agent_error"
            seen.append(error["message"])
        async with http.get(f"{server.url}/v1/sessions/boom/turns/t-1") as r:
            seen.append((await r.json())["error"]["message"])
        body = {"message": "hi", "stream": True}
        async with http.post(url, json=body, headers={"Idempotency-Key": "t-2"}) as r:
            kind, data = (await sse_events(r))[-1]
            assert kind == "error"
            seen.append(data["message"])
        async with http.ws_connect(f"{server.url}/v1/sessions/boom/ws") as ws:
            await ws.send_json({"type": "turn", "message": "hi", "turn_id": "t-3"})
            frame = await ws.receive_json(timeout=10)
            assert frame["type"] == "error" and frame["code"] == "agent_error"
            seen.append(frame["message"])
    for message, turn_id in zip(seen, ["t-1", "t-1", "t-2", "t-3"], strict=True):
        if detailed:
            assert f"RuntimeError: {SECRET_TEXT}" in message
        else:
            assert SECRET_TEXT not in message and "RuntimeError" not in message
            assert turn_id in message
    assert SECRET_TEXT in server.log(), "the exception goes to the log"


async def test_errors_never_show_the_tenant_scoped_session_id(
    agenthost_factory: Callable[..., AgentHostProcess], tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'scoped.db'}"
    key = create_key(store, "acme")
    server = agenthost_factory(
        store=store, auth="keys", llm="sim://?latency_ms=3000", enqueue_timeout=0.2
    )
    auth = {"Authorization": f"Bearer {key}"}
    answers: list[str] = []
    async with aiohttp.ClientSession(headers=auth) as http:
        async with http.post(f"{server.url}/v1/sessions", json={"session_id": "dup"}) as r:
            assert r.status == 201
        async with http.post(f"{server.url}/v1/sessions", json={"session_id": "dup"}) as r:
            assert r.status == 409
            answers.append(await r.text())
        turns = f"{server.url}/v1/sessions/busy/turns"
        first = asyncio.ensure_future(
            http.post(turns, json={"message": "long"}, headers={"Idempotency-Key": "long"})
        )
        deadline = time.monotonic() + 10
        while True:  # until the first turn holds the session
            async with http.get(f"{server.url}/v1/sessions/busy/turns/long") as r:
                if r.status == 200 and (await r.json())["status"] == "running":
                    break
            assert time.monotonic() < deadline, "the first turn never started"
            await asyncio.sleep(0.02)
        for on_busy in ("reject", "enqueue"):
            async with http.post(turns, json={"message": "x", "on_busy": on_busy}) as r:
                assert r.status == 409
                answers.append(await r.text())
        body = {"message": "x", "on_busy": "reject", "stream": True}
        async with http.post(turns, json=body) as r:
            assert r.status == 409, "a busy session is a 409 status on a streamed POST too"
            assert r.content_type == "application/json"
            answers.append(await r.text())
        async with http.ws_connect(f"{server.url}/v1/sessions/busy/ws") as ws:
            await ws.send_json({"type": "turn", "message": "x", "on_busy": "reject"})
            frame = await ws.receive_json(timeout=10)
            assert frame["code"] == "session_busy"
            answers.append(json.dumps(frame))
        async with http.get(f"{server.url}/v1/sessions/busy/turns/nope") as r:
            assert r.status == 404
            answers.append(await r.text())
        (await first).release()
    for answer in answers:
        assert "acme/" not in answer, answer


def test_serve_help_lists_detailed_errors_off_by_default() -> None:
    result = subprocess.run(
        [AGENTHOST, "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "--detailed-errors" in result.stdout
