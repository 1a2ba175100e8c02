"""Resuming a streamed turn by sending it again (same Idempotency-Key or turn_id, with the
last event number seen): it follows a turn running elsewhere, replays a finished one, and runs
it again after a `reset` event when the process running it was killed. And `on_disconnect`."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec
import pytest

from agenthost.brokers import StreamEvent, create_broker
from agenthost.turns.chunks import ChunkFlusher, TurnStream
from tests.fixtures.agenthost import AgentHostProcess
from tests.fixtures.redis import redis_cli
from tests.test_streaming import collect, parse_sse

SLOW_LLM = "sim://?ttft_ms=50&tokens_per_s=40&words=40"

Event = tuple[int, str, dict[str, Any]]


def sid() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


async def read_events(resp: aiohttp.ClientResponse, stop_after: int | None = None) -> list[Event]:
    """SSE events of a response, up to `stop_after` of them (then the connection is dropped)."""
    events: list[Event] = []
    buffer = ""
    async for raw in resp.content:
        buffer += raw.decode()
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            events += parse_sse(block + "\n\n")
            if stop_after is not None and len(events) >= stop_after:
                return events
    return events


def text_after_last_reset(events: list[Event]) -> str:
    start = max((i for i, (_, kind, _) in enumerate(events) if kind == "reset"), default=-1)
    return "".join(d["text"] for _, kind, d in events[start + 1 :] if kind == "chunk")


async def committed(http: aiohttp.ClientSession, url: str, s: str, tid: str) -> dict[str, Any]:
    async with http.get(f"{url}/v1/sessions/{s}/turns/{tid}") as resp:
        body: dict[str, Any] = await resp.json()
        return body


# -- the publisher's numbering ------------------------------------------------------------


async def test_a_rerun_numbers_on_after_the_dead_attempt_and_starts_with_reset() -> None:
    broker = create_broker("memory://")
    first = TurnStream(broker, "s", "t", ChunkFlusher(0.0))
    first.sink("half an ans")
    first.flush()  # published at once (in-process); then its process dies: no final event
    again = TurnStream(broker, "s", "t", ChunkFlusher(0.0), resume=True)
    again.started()
    again.sink("whole answer")
    await again.finish("done", b'{"response":"whole answer"}')
    events = await collect(broker, "s", "t", 0)
    assert [(e.seq, e.kind) for e in events] == [(1, "chunk"), (2, "reset"), (3, "chunk"),
                                                 (4, "done")]  # fmt: skip


async def test_a_replay_does_not_end_a_stream_twice() -> None:
    broker = create_broker("memory://")
    first = TurnStream(broker, "s", "t", ChunkFlusher(0.0))
    await first.finish("done", b'{"response":"x"}')
    replay = TurnStream(broker, "s", "t", ChunkFlusher(0.0), resume=True)
    await replay.finish("done", b'{"response":"x"}')
    assert [e.seq for e in await collect(broker, "s", "t", 0)] == [1]


async def test_a_withdrawn_attempt_ends_after_an_earlier_attempts_end() -> None:
    # Sent again after it failed, then withdrawn from the queue before it ran: its readers
    # start after the failed attempt's final event, so the new one is published after it.
    broker = create_broker("memory://")
    first = TurnStream(broker, "s", "t", ChunkFlusher(0.0))
    await first.finish("error", b'{"code":"interrupted","message":"x"}')
    withdrawn = TurnStream(broker, "s", "t", ChunkFlusher(0.0), claim=False, resume=True)
    await withdrawn.end_unrun("error", b'{"code":"interrupted","message":"y"}')
    assert [(e.seq, e.kind) for e in await collect(broker, "s", "t", 1)] == [(2, "error")]


async def test_a_replay_of_an_expired_stream_ends_after_the_clients_position() -> None:
    broker = create_broker("memory://")
    replay = TurnStream(broker, "s", "t", ChunkFlusher(0.0), resume=True, after=7)
    await replay.finish("done", b'{"response":"x"}')
    assert await collect(broker, "s", "t", 7) == [StreamEvent(8, "done", b'{"response":"x"}')]


# -- over HTTP, two processes on one Redis -------------------------------------------------


async def test_a_killed_process_turn_reruns_on_the_other_with_a_reset(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str
) -> None:
    common = {"store": redis_url, "llm": SLOW_LLM, "chunk_coalesce_ms": 0, "lease_ttl": 1}
    a = agenthost_factory(**common)
    b = agenthost_factory(**common)
    s, tid = sid(), "kill-1"
    body = {"message": "tell me a long story", "stream": True}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{a.url}/v1/sessions/{s}/turns", json=body, headers={"Idempotency-Key": tid}
        ) as resp:
            first = await read_events(resp, stop_after=4)
            a.kill()  # mid-answer: the turn's process is gone
        last_seen = first[-1][0]
        async with http.post(
            f"{b.url}/v1/sessions/{s}/turns",
            json=body,
            headers={"Idempotency-Key": tid, "Last-Event-ID": str(last_seen)},
        ) as resp:
            assert resp.status == 200
            rest = await read_events(resp)
        events = first + rest
        seqs = [seq for seq, _, _ in events]
        assert seqs == sorted(set(seqs)), "no event missing order or repeated"
        assert rest[0][1] == "reset" and rest[0][0] > last_seen
        assert rest[-1][1] == "done"
        record = await committed(http, b.url, s, tid)
        assert record["status"] == "completed"
        assert text_after_last_reset(events) == record["response"] == rest[-1][2]["response"]
        async with http.get(f"{b.url}/v1/sessions/{s}/messages") as resp:
            messages = (await resp.json())["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"]


async def test_sending_a_running_turn_again_elsewhere_follows_it_without_running_it_twice(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str
) -> None:
    common = {"store": redis_url, "llm": SLOW_LLM, "chunk_coalesce_ms": 0}
    a = agenthost_factory(**common)
    b = agenthost_factory(**common)
    s, tid = sid(), "follow-1"
    body = {"message": "tell me a long story", "stream": True, "on_busy": "reject"}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{a.url}/v1/sessions/{s}/turns", json=body, headers={"Idempotency-Key": tid}
        ) as resp:
            first = await read_events(resp, stop_after=3)
        async with http.post(
            f"{b.url}/v1/sessions/{s}/turns",
            json=body,
            headers={"Idempotency-Key": tid, "Last-Event-ID": str(first[-1][0])},
        ) as resp:
            rest = await read_events(resp)
        events = first + rest
        assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))
        assert "reset" not in [kind for _, kind, _ in events]
        record = await committed(http, b.url, s, tid)
        assert text_after_last_reset(events) == record["response"]
        # Sent again once finished: the events after the given number, from the broker.
        async with http.post(
            f"{a.url}/v1/sessions/{s}/turns",
            json=body,
            headers={"Idempotency-Key": tid, "Last-Event-ID": "2"},
        ) as resp:
            replayed = await read_events(resp)
        assert replayed == events[2:]
        async with http.get(f"{a.url}/v1/sessions/{s}/messages") as resp:
            assert len((await resp.json())["messages"]) == 2


async def test_a_websocket_turn_frame_sent_again_reruns_a_killed_turn(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str
) -> None:
    common = {"store": redis_url, "llm": SLOW_LLM, "chunk_coalesce_ms": 0, "lease_ttl": 1}
    a = agenthost_factory(**common)
    b = agenthost_factory(**common)
    s, tid = sid(), "ws-kill-1"
    frame = {"type": "turn", "message": "tell me a long story", "turn_id": tid}
    frames: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{a.url}/v1/sessions/{s}/ws") as ws:
            await ws.send_json(frame)
            while len(frames) < 3:
                frames.append(json.loads((await ws.receive(timeout=10)).data))
            a.kill()
        async with http.ws_connect(f"{b.url}/v1/sessions/{s}/ws") as ws:
            await ws.send_json({**frame, "after": frames[-1]["seq"]})
            while frames[-1]["type"] not in ("done", "error"):
                frames.append(json.loads((await ws.receive(timeout=15)).data))
        kinds = [f["type"] for f in frames]
        # A may have published a few more chunks between the third frame's arrival and its
        # death: B replays those, then the re-run's reset, then the whole new answer.
        assert "reset" in kinds[3:] and kinds[-1] == "done", kinds
        reset = kinds.index("reset", 3)
        assert set(kinds[3:reset]) <= {"chunk"} and "reset" not in kinds[reset + 1 :], kinds
        seqs = [f["seq"] for f in frames]
        assert seqs == sorted(set(seqs))
        text = "".join(f["text"] for f in frames[reset + 1 :] if f["type"] == "chunk")
        record = await committed(http, b.url, s, tid)
        assert text == record["response"] == frames[-1]["response"]


# -- on_disconnect ----------------------------------------------------------------------------


async def wait_for_status(
    http: aiohttp.ClientSession, url: str, s: str, tid: str, statuses: set[str]
) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        record = await committed(http, url, s, tid)
        if record.get("status") in statuses:
            return record
        assert time.monotonic() < deadline, f"turn {tid} stayed {record}"
        await asyncio.sleep(0.05)


async def test_on_disconnect_cancel_stops_a_streamed_turn_and_continue_finishes_it(
    agenthost_factory: Callable[..., AgentHostProcess],
) -> None:
    server = agenthost_factory(llm=SLOW_LLM, chunk_coalesce_ms=0)
    async with aiohttp.ClientSession() as http:
        for policy, expected in (("cancel", "failed"), ("continue", "completed")):
            s, tid = sid(), f"leave-{policy}"
            body = {"message": "a long story", "stream": True, "on_disconnect": policy}
            async with http.post(
                f"{server.url}/v1/sessions/{s}/turns", json=body, headers={"Idempotency-Key": tid}
            ) as resp:
                await read_events(resp, stop_after=2)  # then the client goes
            record = await wait_for_status(http, server.url, s, tid, {"completed", "failed"})
            assert record["status"] == expected, record
            if expected == "failed":
                assert record["error"]["code"] == "interrupted"


async def test_on_disconnect_cancel_stops_a_plain_turn_when_the_client_leaves(
    agenthost_factory: Callable[..., AgentHostProcess],
) -> None:
    server = agenthost_factory(llm="sim://?latency_ms=3000")
    s, tid = sid(), "leave-plain"
    async with aiohttp.ClientSession() as http:
        request = asyncio.ensure_future(
            http.post(
                f"{server.url}/v1/sessions/{s}/turns",
                json={"message": "hi", "on_disconnect": "cancel"},
                headers={"Idempotency-Key": tid},
            )
        )
        await wait_for_status(http, server.url, s, tid, {"running", "pending"})
        request.cancel()  # the client hangs up
        record = await wait_for_status(http, server.url, s, tid, {"completed", "failed"})
        assert record["status"] == "failed" and record["error"]["code"] == "interrupted"


async def test_a_websocket_turn_with_on_disconnect_cancel_stops_when_the_socket_closes(
    agenthost_factory: Callable[..., AgentHostProcess],
) -> None:
    server = agenthost_factory(llm=SLOW_LLM, chunk_coalesce_ms=0)
    s, tid = sid(), "ws-leave"
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{server.url}/v1/sessions/{s}/ws") as ws:
            await ws.send_json(
                {"type": "turn", "message": "a story", "turn_id": tid, "on_disconnect": "cancel"}
            )
            first = msgspec.json.decode((await ws.receive(timeout=10)).data)
            assert first["type"] == "chunk"
        record = await wait_for_status(http, server.url, s, tid, {"completed", "failed"})
        assert record["status"] == "failed" and record["error"]["code"] == "interrupted"


# -- resuming at or past the end ------------------------------------------------------------


async def test_a_resume_at_or_past_the_end_answers_at_once(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str
) -> None:
    """EventSource reconnects after `done` with its id: 204 at once (and EventSource stops);
    an id the stream never reached is a 422; a resume with no turn id is a 400. On the
    process that ran the turn (in-process stream) and on another (Redis stream)."""
    common = {"store": redis_url, "llm": SLOW_LLM, "chunk_coalesce_ms": 0}
    a = agenthost_factory(**common)
    b = agenthost_factory(**common)
    s, tid = sid(), "end-1"
    body = {"message": "hello there", "stream": True}
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.post(
            f"{a.url}/v1/sessions/{s}/turns", json=body, headers={"Idempotency-Key": tid}
        ) as resp:
            events = await read_events(resp)
        end = events[-1][0]
        assert events[-1][1] == "done"
        for proc in (a, b):
            stream_url = f"{proc.url}/v1/sessions/{s}/turns/{tid}/stream"
            async with http.get(stream_url, headers={"Last-Event-ID": str(end)}) as resp:
                assert resp.status == 204, await resp.text()
            async with http.post(
                f"{proc.url}/v1/sessions/{s}/turns",
                json=body,
                headers={"Idempotency-Key": tid, "Last-Event-ID": str(end)},
            ) as resp:
                assert resp.status == 204
            async with http.get(stream_url, headers={"Last-Event-ID": str(end + 1)}) as resp:
                assert resp.status == 422
                assert (await resp.json())["error"]["code"] == "event_beyond_end"
            async with http.post(
                f"{proc.url}/v1/sessions/{s}/turns",
                json=body,
                headers={"Idempotency-Key": tid, "Last-Event-ID": str(end + 7)},
            ) as resp:
                assert resp.status == 422
            async with http.ws_connect(f"{proc.url}/v1/sessions/{s}/ws") as ws:
                # The final event again, at once, for a `resume` and for a `turn` sent again.
                await ws.send_json({"type": "resume", "turn_id": tid, "after": end})
                again = json.loads((await ws.receive(timeout=5)).data)
                assert (again["type"], again["seq"]) == ("done", end)
                frame = {"type": "turn", "message": body["message"]}
                await ws.send_json({**frame, "turn_id": tid, "after": end})
                again = json.loads((await ws.receive(timeout=5)).data)
                assert (again["type"], again["seq"]) == ("done", end)
                await ws.send_json({**frame, "after": 2})
                refused = json.loads((await ws.receive(timeout=5)).data)
                assert (refused["type"], refused["code"]) == ("error", "turn_id_required")
            async with http.post(
                f"{proc.url}/v1/sessions/{s}/turns", json=body, headers={"Last-Event-ID": "3"}
            ) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"]["code"] == "turn_id_required"


# -- a model that thinks ------------------------------------------------------------------------

# The broker's reply timeout is 0.3 s here (its XREAD BLOCK asks for 0.6 s at a time), and
# the model thinks 2.5 s before its first token: many times longer than any read timeout.
THINKING_LLM = "sim://?ttft_ms=2500&tokens_per_s=40&words=12"


def with_reply_timeout(url: str, seconds: float) -> str:
    return f"{url}?socket_timeout={seconds}"


async def test_a_reader_on_another_process_waits_through_a_long_pause_with_heartbeats(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str
) -> None:
    """A turn runs on A, its model silent for 2.5 s; SSE and WebSocket readers on B (through
    the Redis broker) get `: ping` lines (SSE) meanwhile, then every chunk and `done`."""
    common = {
        "store": redis_url,
        "broker": with_reply_timeout(redis_url, 0.3),
        "llm": THINKING_LLM,
        "chunk_coalesce_ms": 0,
        "sse_heartbeat_s": 0.4,
    }
    a = agenthost_factory(**common)
    b = agenthost_factory(**common)
    s, tid = sid(), "think-1"
    async with aiohttp.ClientSession() as http:
        running = asyncio.ensure_future(
            http.post(
                f"{a.url}/v1/sessions/{s}/turns",
                json={"message": "think first", "stream": True},
                headers={"Idempotency-Key": tid},
            )
        )
        deadline = time.monotonic() + 10
        while (await committed(http, a.url, s, tid)).get("status") != "running":
            assert time.monotonic() < deadline, "the turn never started"
            await asyncio.sleep(0.05)

        async def sse_on_b() -> str:
            async with http.get(f"{b.url}/v1/sessions/{s}/turns/{tid}/stream") as resp:
                assert resp.status == 200
                return await resp.text()

        async def ws_on_b() -> list[dict[str, Any]]:
            frames: list[dict[str, Any]] = []
            async with http.ws_connect(f"{b.url}/v1/sessions/{s}/ws") as ws:
                await ws.send_json({"type": "resume", "turn_id": tid, "after": 0})
                while not frames or frames[-1]["type"] not in ("done", "error"):
                    frames.append(json.loads((await ws.receive(timeout=15)).data))
            return frames

        raw, frames = await asyncio.gather(sse_on_b(), ws_on_b())
        (await running).close()
        record = await committed(http, b.url, s, tid)
        assert record["status"] == "completed"
        assert ": ping\n\n" in raw, "no heartbeat while the model thought"
        events = parse_sse(raw)
        assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))
        assert events[-1][1] == "done"
        assert text_after_last_reset(events) == record["response"]
        assert frames[-1]["type"] == "done"
        text = "".join(f["text"] for f in frames if f["type"] == "chunk")
        assert text == record["response"]


async def test_after_a_crash_a_resend_elsewhere_reaches_reset_chunks_and_done_at_once(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str
) -> None:
    """A's process dies mid-answer; the resend to B waits for the lease to expire and for the
    model's long first token (both far past the broker's read timeout) on its first try."""
    common = {
        "store": redis_url,
        "broker": with_reply_timeout(redis_url, 0.3),
        "llm": "sim://?ttft_ms=1500&tokens_per_s=20&words=20",
        "chunk_coalesce_ms": 0,
        "lease_ttl": 1,
        "sse_heartbeat_s": 0.4,
    }
    a = agenthost_factory(**common)
    b = agenthost_factory(**common)
    s, tid = sid(), "think-kill-1"
    body = {"message": "tell me a long story", "stream": True}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{a.url}/v1/sessions/{s}/turns", json=body, headers={"Idempotency-Key": tid}
        ) as resp:
            first = await read_events(resp, stop_after=3)
            a.kill()
        last_seen = first[-1][0]
        async with http.post(
            f"{b.url}/v1/sessions/{s}/turns",
            json=body,
            headers={"Idempotency-Key": tid, "Last-Event-ID": str(last_seen)},
        ) as resp:
            assert resp.status == 200
            rest = await read_events(resp)
        assert rest[0][1] == "reset" and rest[-1][1] == "done", [kind for _, kind, _ in rest]
        record = await committed(http, b.url, s, tid)
        assert text_after_last_reset(first + rest) == record["response"]


# -- a deleted session ------------------------------------------------------------------------


async def stream_turn(
    http: aiohttp.ClientSession, url: str, s: str, message: str, headers: dict[str, str]
) -> list[Event]:
    async with http.post(
        f"{url}/v1/sessions/{s}/turns", json={"message": message, "stream": True}, headers=headers
    ) as resp:
        assert resp.status == 200
        return await read_events(resp)


async def test_a_deleted_sessions_streams_never_come_back(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str, redis_server: Any
) -> None:
    """A streamed turn under key k, DELETE, then a new turn under k on the process that ran
    it and on another: neither replays the deleted chunks or answer, and the Redis stream
    key is gone with the session."""
    common = {"store": redis_url, "llm": "sim://?words=6", "chunk_coalesce_ms": 0}
    a = agenthost_factory(**common)
    b = agenthost_factory(**common)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for second in (a, b):
            s = sid()
            key = {"Idempotency-Key": "k"}
            old = await stream_turn(http, a.url, s, "the secret plan", key)
            assert "secret" in old[-1][2]["response"]
            assert redis_cli(redis_server.port, "EXISTS", f"ah:{{{s}}}:stream:k") == "1"
            async with http.delete(f"{a.url}/v1/sessions/{s}") as resp:
                assert resp.status == 204
            assert redis_cli(redis_server.port, "KEYS", f"ah:{{{s}}}*") == ""
            async with http.get(f"{second.url}/v1/sessions/{s}/turns/k/stream") as resp:
                assert resp.status == 404
            new = await stream_turn(http, second.url, s, "a new start", key)
            assert new[-1][1] == "done" and "secret" not in json.dumps(new)
            assert [seq for seq, _, _ in new] == list(range(1, len(new) + 1))
            async with http.get(
                f"{b.url}/v1/sessions/{s}/turns/k/stream", headers={"Last-Event-ID": "0"}
            ) as resp:
                again = await read_events(resp)
            assert "secret" not in json.dumps(again) and again[-1][1] == "done"


@pytest.mark.slow
@pytest.mark.parametrize("deleted_on", ["its process", "another"])
async def test_a_turn_running_when_its_session_is_deleted_is_cut_and_leaves_nothing(
    agenthost_factory: Callable[..., AgentHostProcess],
    redis_url: str,
    redis_server: Any,
    deleted_on: str,
) -> None:
    """The turn loses its lease with the session: its commit is refused, its stream ends
    with an `error` (lease_lost) for the reader on its process and for one elsewhere, and
    its stream key goes."""
    common = {
        "store": redis_url,
        "llm": "sim://?ttft_ms=300&tokens_per_s=20&words=30",
        "chunk_coalesce_ms": 0,
    }
    a = agenthost_factory(**common)
    b = agenthost_factory(**common)
    s = sid()
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{a.url}/v1/sessions/{s}/turns",
            json={"message": "a long one", "stream": True},
            headers={"Idempotency-Key": "k"},
        ) as resp:
            first = await read_events(resp, stop_after=2)
            async with http.ws_connect(f"{b.url}/v1/sessions/{s}/ws") as ws:
                await ws.send_json({"type": "resume", "turn_id": "k", "after": first[-1][0]})
                json.loads((await ws.receive(timeout=10)).data)  # B follows the turn
                deleter = a if deleted_on == "its process" else b
                async with http.delete(f"{deleter.url}/v1/sessions/{s}") as deleted:
                    assert deleted.status == 204
                rest = await read_events(resp)
                frames: list[dict[str, Any]] = []
                # B reads the turn's error from Redis, or, if the stream was deleted before
                # its next read, ends it with an error of its own: never a `done`.
                while not frames or frames[-1]["type"] not in ("done", "error"):
                    frames.append(json.loads((await ws.receive(timeout=10)).data))
        assert rest[-1][1] == "error" and rest[-1][2]["code"] == "lease_lost", rest[-1]
        assert frames[-1]["type"] == "error", frames
        assert frames[-1]["code"] in ("lease_lost", "interrupted"), frames
        async with http.get(f"{a.url}/v1/sessions/{s}/messages") as resp:
            assert resp.status == 404  # nothing was committed: the session stays deleted
        assert redis_cli(redis_server.port, "KEYS", f"ah:{{{s}}}*") == ""
