"""The lean WebSocket protocol keeps nothing of the handshake once a connection is open, and
the connection still works (frames both ways, pings, close)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from agenthost.core.settings import Settings
from agenthost.runtime.assembly import build_app
from agenthost.runtime.lean_protocols import LeanHttpToolsProtocol, LeanWebSocketProtocol
from tests.fixtures.agenthost import free_port


async def echo(ws: WebSocket) -> None:
    await ws.accept()
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        await ws.send_text("echo: " + message["text"])


@contextlib.asynccontextmanager
async def lean_server(app: Any, lifespan: str = "off") -> AsyncIterator[tuple[uvicorn.Server, int]]:
    """uvicorn with agenthost's protocols in this process, serving `app`."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=LeanHttpToolsProtocol,
        ws=LeanWebSocketProtocol,
        lifespan=lifespan,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve())
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while not server.started:
            assert asyncio.get_running_loop().time() < deadline, "server did not start"
            await asyncio.sleep(0.01)
        yield server, port
    finally:
        server.should_exit = True
        await serving


async def test_a_frame_written_straight_to_the_socket_reads_as_the_library_would_send_it() -> None:
    # Payloads on each side of the frame header's two length thresholds.
    payloads = [b'{"n":"%s"}' % (b"x" * n) for n in (0, 110, 200, 70_000)]
    outcomes: list[bool] = []

    async def write_now(ws: WebSocket) -> None:
        await ws.accept()
        (protocol,) = [
            p
            for p in server.server_state.connections
            if isinstance(p, LeanWebSocketProtocol) and p.scope is ws.scope
        ]
        await ws.receive()  # the client is ready
        outcomes.extend(protocol.send_text_now(payload) for payload in payloads)
        await ws.send_text("through send")  # the general path still follows in order
        await ws.receive()  # until the client leaves

    app = Starlette(routes=[WebSocketRoute("/ws", write_now)])
    async with lean_server(app) as (server, port), aiohttp.ClientSession() as http:
        async with http.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
            await ws.send_str("ready")
            received = [(await ws.receive(timeout=5)).data for _ in range(len(payloads) + 1)]
        assert outcomes == [True] * len(payloads)
        assert received == [p.decode() for p in payloads] + ["through send"]
        # With permessage-deflate the frame must be compressed: it goes the general way.
        outcomes.clear()
        async with http.ws_connect(f"http://127.0.0.1:{port}/ws", compress=15) as ws:
            await ws.send_str("ready")
            assert (await ws.receive(timeout=5)).data == "through send"
        assert outcomes == [False] * len(payloads)


def direct_writes(monkeypatch: pytest.MonkeyPatch, protocol: type, method: str) -> list[bytes]:
    """What `protocol.method` writes straight to the socket (its last argument), recorded."""
    written: list[bytes] = []
    original = getattr(protocol, method)

    def recorded(self: Any, *args: Any) -> bool:
        ok: bool = original(self, *args)
        if ok:
            written.append(args[-1])
        return ok

    monkeypatch.setattr(protocol, method, recorded)
    return written


@contextlib.asynccontextmanager
async def agenthost_in_process() -> AsyncIterator[int]:
    """agenthost's app on agenthost's protocols in this process, streaming 20 fast tokens a
    turn; yields its port."""
    settings = Settings(
        store="memory://", llm="sim://?tokens_per_s=500&words=20", chunk_coalesce_ms=0
    )
    async with lean_server(build_app(settings), lifespan="on") as (_, port):
        yield port


async def test_agenthost_writes_its_chunk_frames_straight_to_the_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    written = direct_writes(monkeypatch, LeanWebSocketProtocol, "send_text_now")
    async with (
        agenthost_in_process() as port,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"http://127.0.0.1:{port}/v1/sessions/fast/ws") as ws,
    ):
        await ws.send_json({"type": "turn", "message": "hello"})
        frames = []
        while not frames or frames[-1]["type"] == "chunk":
            frames.append(await ws.receive_json(timeout=10))
    assert frames[-1]["type"] == "done"
    chunks = [f for f in frames if f["type"] == "chunk"]
    assert len(chunks) > 1
    # Every frame went the direct way: the chunks and the final one.
    assert [msgspec.json.decode(p) for p in written] == frames


async def test_agenthost_writes_its_sse_events_straight_to_the_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    written = direct_writes(monkeypatch, LeanHttpToolsProtocol, "write_chunk_now")
    async with (
        agenthost_in_process() as port,
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{port}/v1/sessions/fast/turns",
            json={"message": "hello", "stream": True},
        ) as resp,
    ):
        assert resp.status == 200
        text = await resp.text()
    events = [block for block in text.split("\n\n") if block]
    assert events[-1].startswith("id: ") and "event: done" in events[-1]
    assert len(events) > 2
    # Every event went the direct way, chunks and the final one; the response still ended
    # properly through the ASGI send (aiohttp read it to its end).
    assert b"".join(written).decode() == text


async def test_an_open_connection_holds_no_handshake_and_still_talks() -> None:
    app = Starlette(routes=[WebSocketRoute("/ws", echo)])
    async with (
        lean_server(app) as (server, port),
        aiohttp.ClientSession() as http,
        http.ws_connect(f"http://127.0.0.1:{port}/ws") as ws,
    ):
        await ws.send_str("one")
        assert (await ws.receive(timeout=5)).data == "echo: one"
        protocols = [
            p for p in server.server_state.connections if isinstance(p, LeanWebSocketProtocol)
        ]
        assert len(protocols) == 1
        protocol = protocols[0]
        assert not hasattr(protocol, "request") and not hasattr(protocol, "response")
        parser: Any = protocol.conn.parser  # a generator: its frame holds its locals
        assert parser.gi_frame is not None
        assert "request" not in parser.gi_frame.f_locals, "the parser still holds it"
        # The HTTP protocol that served the upgrade is gone without a collection.
        gc.collect()
        gc.disable()
        try:
            async with http.ws_connect(f"http://127.0.0.1:{port}/ws") as second:
                await second.send_str("x")
                assert (await second.receive(timeout=5)).data == "echo: x"
                alive = [o for o in gc.get_objects() if isinstance(o, HttpToolsProtocol)]
                assert alive == [], "the upgraded HTTP protocol waits for the collector"
        finally:
            gc.enable()
        await ws.send_str("two")
        assert (await ws.receive(timeout=5)).data == "echo: two"
