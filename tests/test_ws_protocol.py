"""The lean WebSocket protocol keeps nothing of the handshake once a connection is open, and
the connection still works (frames both ways, pings, close)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from agenthost.ws_protocol import LeanHttpToolsProtocol, LeanWebSocketProtocol
from tests.fixtures.agenthost import free_port


async def echo(ws: WebSocket) -> None:
    await ws.accept()
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        await ws.send_text("echo: " + message["text"])


async def test_an_open_connection_holds_no_handshake_and_still_talks() -> None:
    port = free_port()
    config = uvicorn.Config(
        Starlette(routes=[WebSocketRoute("/ws", echo)]),
        host="127.0.0.1",
        port=port,
        http=LeanHttpToolsProtocol,
        ws=LeanWebSocketProtocol,
        lifespan="off",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve())
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while not server.started:
            assert asyncio.get_running_loop().time() < deadline, "server did not start"
            await asyncio.sleep(0.01)
        async with (
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
    finally:
        server.should_exit = True
        await serving
