"""The WebSocket endpoint: turns streamed as numbered frames, bad frames answered without
dropping the connection, resume on another process, 1012 on drain."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from agenthost.core.settings import Settings
from agenthost.runtime.assembly import build_app
from tests.fixtures.agenthost import AgentHostProcess
from tests.test_drain import wait_running


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        store=f"sqlite:///{tmp_path / 'ws.db'}",
        llm="sim://?tokens_per_s=500&words=12",
        chunk_coalesce_ms=0,
    )
    with TestClient(build_app(settings)) as c:
        yield c


def test_a_turn_streams_numbered_chunks_then_done(client: TestClient) -> None:
    with client.websocket_connect("/v1/sessions/w1/ws") as ws:
        ws.send_json({"type": "turn", "message": "hello there", "turn_id": "w1-t1"})
        frames: list[dict[str, Any]] = []
        while not frames or frames[-1]["type"] == "chunk":
            frames.append(ws.receive_json())
    assert frames[-1]["type"] == "done" and len(frames) > 2
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    text = "".join(f["text"] for f in frames if f["type"] == "chunk")
    assert text == frames[-1]["response"] and "hello there" in text
    status = client.get("/v1/sessions/w1/turns/w1-t1").json()
    assert status["status"] == "completed" and status["response"] == text


def test_bad_frames_get_an_error_frame_and_the_connection_stays(client: TestClient) -> None:
    with client.websocket_connect("/v1/sessions/w2/ws") as ws:
        for bad in ("not json", '{"type": "dance"}', '{"type": "turn"}', "[]"):
            ws.send_text(bad)
            frame = ws.receive_json()
            assert frame["type"] == "error" and frame["code"] == "bad_frame", bad
        ws.send_json({"type": "turn", "message": "still here"})
        while (frame := ws.receive_json())["type"] == "chunk":
            pass
        assert frame["type"] == "done"


def test_a_bad_session_id_is_refused(client: TestClient) -> None:
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        client.websocket_connect("/v1/sessions/bad$id/ws") as ws,
    ):
        ws.receive_json()
    assert refused.value.code == 4004


async def test_resume_on_another_process_and_1012_on_drain(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str
) -> None:
    llm = "sim://?ttft_ms=50&tokens_per_s=40&words=30"
    a = agenthost_factory(store=redis_url, llm=llm, chunk_coalesce_ms=0)
    b = agenthost_factory(store=redis_url, llm=llm, chunk_coalesce_ms=0)
    async with aiohttp.ClientSession() as http:
        seen: list[dict[str, Any]] = []
        async with http.ws_connect(f"{a.url.replace('http', 'ws')}/v1/sessions/wr/ws") as ws:
            await ws.send_json({"type": "turn", "message": "a long one", "turn_id": "wr-1"})
            while len(seen) < 5:
                seen.append(await ws.receive_json())
        # Dropped mid-answer: resume elsewhere after the last frame seen.
        async with http.ws_connect(f"{b.url.replace('http', 'ws')}/v1/sessions/wr/ws") as ws:
            await ws.send_json({"type": "resume", "turn_id": "wr-1", "after": seen[-1]["seq"]})
            while seen[-1]["type"] == "chunk":
                seen.append(await ws.receive_json())
            assert [f["seq"] for f in seen] == list(range(1, len(seen) + 1))
            text = "".join(f["text"] for f in seen if f["type"] == "chunk")
            assert text == seen[-1]["response"]
            # Idle connection, process drains: closed with 1012 (service restart).
            assert b.proc is not None
            b.proc.send_signal(signal.SIGTERM)
            message = await asyncio.wait_for(ws.receive(), 10)
            assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == 1012


async def test_a_new_connection_to_a_draining_process_is_closed_with_1012(
    agenthost_factory: Callable[..., AgentHostProcess],
) -> None:
    server = agenthost_factory(llm="sim://?latency_ms=5000", drain_timeout=30)
    ws_url = f"{server.url.replace('http', 'ws')}/v1/sessions/dr/ws"
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as busy:
        # A turn in flight keeps the process draining (not gone) while we connect again.
        await busy.send_json({"type": "turn", "message": "slow", "turn_id": "dr-1"})
        # SIGTERM before the turn began would find nothing in flight: the process would exit
        # at once and refuse the late connection.
        await wait_running(http, server.url, "dr", "dr-1")
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            async with http.get(f"{server.url}/readyz") as resp:
                if resp.status == 503:
                    break
            assert asyncio.get_running_loop().time() < deadline, "never started draining"
            await asyncio.sleep(0.02)
        async with http.ws_connect(ws_url) as late:
            message = await asyncio.wait_for(late.receive(), 10)
            assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert late.close_code == 1012


def test_a_browser_may_send_its_key_as_a_subprotocol() -> None:
    from agenthost.web.websocket import handshake_credentials

    offered = [(b"sec-websocket-protocol", b"agenthost, bearer.ahk_abc")]
    assert handshake_credentials(offered) == ("Bearer ahk_abc", "agenthost")
    # The header wins; without `agenthost` offered, no subprotocol is read or accepted.
    header = [(b"authorization", b"Bearer real"), *offered]
    assert handshake_credentials(header) == ("Bearer real", "agenthost")
    assert handshake_credentials([(b"sec-websocket-protocol", b"bearer.x")]) == (None, None)
    assert handshake_credentials([(b"sec-websocket-protocol", b"agenthost")]) == (
        None,
        "agenthost",
    )
