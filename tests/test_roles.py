"""`--role api` and `--role worker` on a real redis-server: the api process queues turns,
worker processes run them, and clients see the same HTTP and SSE contract as with `all`;
a worker killed or paused mid-turn is replaced without the turn being lost or committed
twice, and a draining worker hands back what it could not finish."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fixtures.agenthost import AGENTHOST, AgentHostProcess, async_wait_until, free_port
from tests.fixtures.redis import command_calls, port_of, redis_cli
from tests.test_stream_resume import SLOW_LLM, committed, read_events, sid, text_after_last_reset

Factory = Callable[..., AgentHostProcess]
SESSIONS, TURNS = 50, 20  # 1,000 turns


def fleet(factory: Factory, redis_url: str, workers: int = 1, **settings: Any) -> tuple[
    AgentHostProcess, list[AgentHostProcess]
]:  # fmt: skip
    common = {"store": redis_url, "llm": "sim://", "chunk_coalesce_ms": 0, **settings}
    api = factory(role="api", **common)
    return api, [factory(role="worker", **common) for _ in range(workers)]


async def messages(http: aiohttp.ClientSession, url: str, s: str) -> list[dict[str, Any]]:
    async with http.get(f"{url}/v1/sessions/{s}/messages") as resp:
        assert resp.status == 200
        found: list[dict[str, Any]] = (await resp.json())["messages"]
        return found


async def test_a_plain_turn_through_the_queue_answers_as_with_role_all(
    agenthost_factory: Factory, redis_url: str
) -> None:
    api, _ = fleet(agenthost_factory, redis_url)
    s = sid()
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{api.url}/v1/sessions/{s}/turns", json={"message": "hi"}) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        assert body["response"]
        assert body["session_id"] == s
        # Sent again with its id, the answer comes from the store, no second run.
        tid = body["turn_id"]
        async with http.post(
            f"{api.url}/v1/sessions/{s}/turns",
            json={"message": "hi"},
            headers={"Idempotency-Key": tid},
        ) as resp:
            again = await resp.json()
        assert again["response"] == body["response"]
        assert [m["role"] for m in await messages(http, api.url, s)] == ["user", "assistant"]


async def test_a_plain_turn_ends_with_one_message_to_its_api_process_and_no_chunks(
    agenthost_factory: Factory, redis_url: str
) -> None:
    """As `--role all` publishes no chunks of a plain turn, its worker publishes its final
    event only, and sends that to the waiting api process's inbox: the api reads no stream
    (it read one per event, through a connection per waiting turn)."""
    api, _ = fleet(agenthost_factory, redis_url)
    port, s = port_of(redis_url), sid()
    stream_reads = command_calls(port, "xread")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{api.url}/v1/sessions/{s}/turns", json={"message": "hi"}) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        assert command_calls(port, "xread") == stream_reads
        stream_url = f"{api.url}/v1/sessions/{s}/turns/{body['turn_id']}/stream"
        async with http.get(stream_url) as resp:
            events = await read_events(resp)
        assert [(seq, kind) for seq, kind, _ in events] == [(1, "done")]
        assert events[0][2]["response"] == body["response"]


async def test_a_plain_turn_has_a_stream_only_when_its_client_named_it(
    agenthost_factory: Factory, redis_url: str
) -> None:
    """A plain turn whose id the api process made cannot be named by another request: its
    worker publishes no stream for it (as `--role all` publishes none for a plain turn). One
    sent with an Idempotency-Key has its final event on its stream, where a retry of it
    sent while it is queued follows it."""
    api, _ = fleet(agenthost_factory, redis_url)
    port, db, s = port_of(redis_url), redis_url.rsplit("/", 1)[1], sid()
    url = f"{api.url}/v1/sessions/{s}/turns"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"message": "hi"}) as resp:
            assert resp.status == 200, await resp.text()
            unnamed = (await resp.json())["turn_id"]
        named = f"named-{s}"
        headers = {"Idempotency-Key": named}
        async with http.post(url, json={"message": "again"}, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
        streams = redis_cli(port, "-n", db, "KEYS", f"ah:*{s}*:stream:*").split()
        assert [key.rsplit(":", 1)[1] for key in streams] == [named]
        assert unnamed != named
        # Read back, the unnamed turn's one event comes from its record.
        async with http.get(f"{url}/{unnamed}/stream") as resp:
            events = await read_events(resp)
        assert [(seq, kind) for seq, kind, _ in events] == [(1, "done")]


async def test_a_streamed_turn_through_the_queue_streams_from_the_worker(
    agenthost_factory: Factory, redis_url: str
) -> None:
    api, _ = fleet(agenthost_factory, redis_url, llm=SLOW_LLM)
    s = sid()
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{api.url}/v1/sessions/{s}/turns", json={"message": "a story", "stream": True}
        ) as resp:
            assert resp.status == 200
            events = await read_events(resp)
        kinds = [kind for _, kind, _ in events]
        assert kinds[-1] == "done" and kinds.count("chunk") > 1
        assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))
        done = events[-1][2]
        assert text_after_last_reset(events) == done["response"]
        record = await committed(http, api.url, s, done["turn_id"])
        assert record["status"] == "completed"


async def test_an_agent_error_crosses_the_queue_as_the_same_error(
    agenthost_factory: Factory, redis_url: str
) -> None:
    api, _ = fleet(agenthost_factory, redis_url, llm="sim://?error_rate=1")
    url = f"{api.url}/v1/sessions/{sid()}/turns"
    async with aiohttp.ClientSession() as http, http.post(url, json={"message": "x"}) as r:
        assert r.status == 502, await r.text()
        assert (await r.json())["error"]["code"] == "llm_unavailable"  # as with --role all


async def test_a_worker_killed_mid_turn_is_replaced_and_the_turn_commits_once(
    agenthost_factory: Factory, redis_url: str
) -> None:
    api, (first, second) = fleet(agenthost_factory, redis_url, workers=2, llm=SLOW_LLM, lease_ttl=1)
    s, tid = sid(), "kill-worker-1"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{api.url}/v1/sessions/{s}/turns",
            json={"message": "a long story", "stream": True},
            headers={"Idempotency-Key": tid},
        ) as resp:
            assert resp.status == 200
            head = await read_events(resp, stop_after=3)
            # Whichever worker took it dies mid-answer.
            for worker in (first, second):
                if await worker_runs(http, worker):
                    worker.kill()
                    break
            else:
                raise AssertionError("no worker was running the turn")
            rest = await read_events(resp)
        events = head + rest
        kinds = [kind for _, kind, _ in events]
        assert "reset" in kinds and kinds[-1] == "done"
        seqs = [seq for seq, _, _ in events]
        assert seqs == sorted(set(seqs))
        record = await committed(http, api.url, s, tid)
        assert record["status"] == "completed"
        assert text_after_last_reset(events) == record["response"]
        assert [m["role"] for m in await messages(http, api.url, s)] == ["user", "assistant"]


async def worker_runs(http: aiohttp.ClientSession, worker: AgentHostProcess) -> bool:
    async with http.get(f"{worker.url}/metrics") as resp:
        text = await resp.text()
    return "agenthost_worker_busy 1" in text


async def test_a_paused_workers_late_commit_is_refused_by_the_fence(
    agenthost_factory: Factory, redis_url: str
) -> None:
    api, (first, second) = fleet(agenthost_factory, redis_url, workers=2, llm=SLOW_LLM, lease_ttl=1)
    s, tid = sid(), "pause-worker-1"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{api.url}/v1/sessions/{s}/turns",
            json={"message": "a long story", "stream": True},
            headers={"Idempotency-Key": tid},
        ) as resp:
            head = await read_events(resp, stop_after=3)
            paused = None
            for worker in (first, second):
                if await worker_runs(http, worker):
                    paused = worker
                    os.kill(worker.pid, signal.SIGSTOP)
                    break
            assert paused is not None, "no worker was running the turn"
            try:
                rest = await read_events(resp)  # the other worker finishes it
            finally:
                os.kill(paused.pid, signal.SIGCONT)
        events = head + rest
        assert [k for _, k, _ in events][-1] == "done"
        # The paused worker wakes with the old lease: its commit is refused, nothing lands.
        await async_wait_until(
            lambda: "taken over by another worker" in paused.log(), 60, "the stale commit refused"
        )
        assert [m["role"] for m in await messages(http, api.url, s)] == ["user", "assistant"]
        record = await committed(http, api.url, s, tid)
        assert text_after_last_reset(events) == record["response"]


@pytest.mark.slow
async def test_a_draining_worker_hands_back_the_turn_it_could_not_finish(
    agenthost_factory: Factory, redis_url: str
) -> None:
    slow = "sim://?ttft_ms=50&tokens_per_s=10&words=60"
    api, (first, second) = fleet(
        agenthost_factory, redis_url, workers=2, llm=slow, lease_ttl=1, drain_timeout=0.5
    )
    s, tid = sid(), "drain-worker-1"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{api.url}/v1/sessions/{s}/turns",
            json={"message": "a long story", "stream": True},
            headers={"Idempotency-Key": tid},
        ) as resp:
            head = await read_events(resp, stop_after=2)
            for worker in (first, second):
                if await worker_runs(http, worker):
                    assert worker.proc is not None
                    worker.proc.send_signal(signal.SIGTERM)
                    break
            else:
                raise AssertionError("no worker was running the turn")
            rest = await read_events(resp)
        events = head + rest
        assert "reset" in [k for _, k, _ in events] and events[-1][1] == "done"
        record = await committed(http, api.url, s, tid)
        assert record["status"] == "completed"
        assert text_after_last_reset(events) == record["response"]
        assert [m["role"] for m in await messages(http, api.url, s)] == ["user", "assistant"]


@pytest.mark.parametrize("role", ["api", "worker"])
def test_a_queue_role_on_a_single_process_store_is_refused_at_start(
    tmp_path: Path, role: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHOST_")}
    out = subprocess.run(
        [AGENTHOST, "serve", "--role", role, "--store", f"sqlite:///{tmp_path}/x.db",
         "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert f"--role {role}" in out.stderr and "use --role all" in out.stderr


def test_agenthost_worker_is_serve_with_role_worker(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHOST_")}
    out = subprocess.run(
        [AGENTHOST, "worker", "--store", "memory://", "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert "--role worker" in out.stderr


@pytest.mark.slow
async def test_a_thousand_background_turns_over_three_workers_commit_once_in_order(
    agenthost_factory: Factory, redis_url: str
) -> None:
    api, _ = fleet(agenthost_factory, redis_url, workers=3, worker_concurrency=8)
    sessions = [sid() for _ in range(SESSIONS)]
    async with aiohttp.ClientSession() as http:

        async def submit(s: str) -> None:
            for n in range(TURNS):
                async with http.post(
                    f"{api.url}/v1/sessions/{s}/turns",
                    json={"message": f"turn {n}", "background": True},
                    headers={"Idempotency-Key": f"{s}-{n}"},
                ) as resp:
                    assert resp.status == 202, await resp.text()

        await asyncio.gather(*(submit(s) for s in sessions))

        async def all_answered(s: str) -> list[dict[str, Any]]:
            deadline = asyncio.get_running_loop().time() + 300
            while True:
                found = await messages_page(http, api.url, s)
                if len(found) >= 2 * TURNS or asyncio.get_running_loop().time() > deadline:
                    return found
                await asyncio.sleep(0.2)

        histories = await asyncio.gather(*(all_answered(s) for s in sessions))
    for s, history in zip(sessions, histories, strict=True):
        users = [m["content"] for m in history if m["role"] == "user"]
        assert users == [f"turn {n}" for n in range(TURNS)], f"{s}: {users}"
        assert [m["turn_id"] for m in history] == [f"{s}-{n}" for n in range(TURNS) for _ in "ua"]


async def messages_page(http: aiohttp.ClientSession, url: str, s: str) -> list[dict[str, Any]]:
    async with http.get(f"{url}/v1/sessions/{s}/messages?limit=1000") as resp:
        if resp.status == 404:
            return []
        found: list[dict[str, Any]] = (await resp.json())["messages"]
        return found


async def test_background_turns_complete_when_their_api_process_is_killed(
    agenthost_factory: Factory, redis_url: str
) -> None:
    api, _ = fleet(agenthost_factory, redis_url, workers=1, llm="sim://?latency_ms=100")
    sessions = [sid() for _ in range(10)]
    async with aiohttp.ClientSession() as http:
        for s in sessions:
            async with http.post(
                f"{api.url}/v1/sessions/{s}/turns", json={"message": "hi", "background": True}
            ) as resp:
                assert resp.status == 202
        api.kill()
        again = agenthost_factory(role="api", store=redis_url, llm="sim://")
        for s in sessions:
            deadline = asyncio.get_running_loop().time() + 120
            while len(await messages_page(http, again.url, s)) < 2:
                assert asyncio.get_running_loop().time() < deadline, f"{s} never answered"
                await asyncio.sleep(0.2)
            assert [m["role"] for m in await messages_page(http, again.url, s)] == [
                "user",
                "assistant",
            ]


async def test_api_and_workers_on_a_postgresql_store_with_a_redis_broker(
    agenthost_factory: Factory, redis_url: str, postgres_url: str
) -> None:
    common = {"store": postgres_url, "broker": redis_url, "llm": SLOW_LLM,
              "chunk_coalesce_ms": 0, "lease_ttl": 1}  # fmt: skip
    api = agenthost_factory(role="api", **common)
    first, second = (agenthost_factory(role="worker", **common) for _ in range(2))
    s, tid = sid(), "pg-kill-1"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{api.url}/v1/sessions/{s}/turns",
            json={"message": "a long story", "stream": True},
            headers={"Idempotency-Key": tid},
        ) as resp:
            head = await read_events(resp, stop_after=3)
            for worker in (first, second):
                if await worker_runs(http, worker):
                    worker.kill()
                    break
            else:
                raise AssertionError("no worker was running the turn")
            rest = await read_events(resp)
        events = head + rest
        assert "reset" in [k for _, k, _ in events] and events[-1][1] == "done"
        record = await committed(http, api.url, s, tid)
        assert text_after_last_reset(events) == record["response"]
        assert [m["role"] for m in await messages(http, api.url, s)] == ["user", "assistant"]


@pytest.mark.parametrize("how", ["poll", "stream"])
def test_loadtest_with_background_turns_through_the_queue_verifies_clean(
    agenthost_factory: Factory, redis_url: str, tmp_path: Path, how: str
) -> None:
    api, _ = fleet(agenthost_factory, redis_url, workers=2, llm="sim://?latency_ms=50")
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [AGENTHOST, "loadtest", "--url", api.url, "--background", how, "--sessions", "30",
         "--turns", "3", "--quiet", "--json", str(out)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["answered"] == 90 and report["failed"] == 0
    assert report["verification"]["lost"] == 0 and report["verification"]["acknowledged"] == 90


async def test_a_turn_sent_to_a_workers_own_port_goes_through_the_queue(
    agenthost_factory: Factory, redis_url: str
) -> None:
    api, (worker,) = fleet(agenthost_factory, redis_url)
    s = sid()
    url = f"{worker.url}/v1/sessions/{s}/turns"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"message": "hi", "background": True}) as resp:
            assert resp.status == 202  # queued, as an api process queues it
            tid = (await resp.json())["turn_id"]
        record = await poll_status(http, f"{api.url}/v1/sessions/{s}/turns/{tid}")
        assert record["status"] == "completed"


async def poll_status(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        async with http.get(url) as resp:
            body: dict[str, Any] = await resp.json()
        if body.get("status") in ("completed", "failed"):
            return body
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.1)


async def test_a_websocket_turn_through_the_queue_streams_as_with_role_all(
    agenthost_factory: Factory, redis_url: str
) -> None:
    api, _ = fleet(agenthost_factory, redis_url, llm=SLOW_LLM)
    s = sid()
    frames: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{api.url.replace('http', 'ws', 1)}/v1/sessions/{s}/ws") as ws:
            await ws.send_json({"type": "turn", "message": "a story", "turn_id": "ws-q-1"})
            async for msg in ws:
                frames.append(msg.json())
                if frames[-1]["type"] in ("done", "error"):
                    break
        assert frames[-1]["type"] == "done", frames[-1]
        text = "".join(f["text"] for f in frames if f["type"] == "chunk")
        assert text == frames[-1]["response"]
        assert [m["role"] for m in await messages(http, api.url, s)] == ["user", "assistant"]


async def test_a_worker_past_its_inflight_limit_hands_turns_back_instead_of_failing_them(
    agenthost_factory: Factory, redis_url: str
) -> None:
    # Two slots for queued turns but one turn in flight allowed: the second is refused by
    # the engine (overloaded), goes back to the queue and runs when the first is done.
    api, _ = fleet(agenthost_factory, redis_url, llm="sim://?latency_ms=300", lease_ttl=1,
                   worker_concurrency=2, max_inflight_turns=1)  # fmt: skip
    sessions = [sid() for _ in range(4)]
    async with aiohttp.ClientSession() as http:

        async def turn(s: str) -> int:
            async with http.post(f"{api.url}/v1/sessions/{s}/turns", json={"message": "x"}) as r:
                return r.status

        assert await asyncio.gather(*(turn(s) for s in sessions)) == [200] * 4


async def test_on_disconnect_cancel_reaches_the_worker_that_runs_the_turn(
    agenthost_factory: Factory, redis_url: str
) -> None:
    api, _ = fleet(agenthost_factory, redis_url, llm="sim://?ttft_ms=50&tokens_per_s=10&words=80")
    s, tid = sid(), "cancel-q-1"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{api.url}/v1/sessions/{s}/turns",
            json={"message": "a long story", "stream": True, "on_disconnect": "cancel"},
            headers={"Idempotency-Key": tid},
        ) as resp:
            await read_events(resp, stop_after=2)
        # The client left mid-answer: the worker stops the turn; its message is kept.
        record = await poll_status(http, f"{api.url}/v1/sessions/{s}/turns/{tid}")
        assert record["status"] == "failed" and record["error"]["code"] == "interrupted"
        assert await messages(http, api.url, s) == []
