"""The seam in front of uvicorn's internals: agenthost's lean protocols run only where the
installed uvicorn and websockets have every name they use, else uvicorn's stock protocols with
one warning; either way a server keeps the whole HTTP, SSE and WebSocket contract."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

import tests.fixtures.agenthost as agenthost_fixture
from agenthost.core.settings import Settings
from agenthost.observability.metrics import Metrics
from agenthost.runtime.assembly import assemble
from agenthost.runtime.connection_limits import ConnectionLimits
from agenthost.runtime.lean_protocols import (
    ConnectionGuard,
    LeanHttpToolsProtocol,
    LeanWebSocketProtocol,
    guard_missing,
    lean_protocols_missing,
)
from agenthost.runtime.protocols import STOCK, choose_protocols
from agenthost.runtime.server import DrainingServer
from agenthost.web.direct_write import DIRECT_WRITER_KEY
from tests.fixtures.agenthost import AgentHostProcess, free_port
from tests.test_streaming import parse_sse

FAST_LLM = "sim://?tokens_per_s=400&words=12"  # a turn in 30 ms, a chunk a token
FALLBACK = "they use what is missing"  # in the fallback's warning


@pytest.fixture
def server_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """What the agenthost.server logger logs, info and up, whatever level another test left."""
    caplog.set_level(logging.INFO, logger="agenthost.server")
    return caplog


def warnings_in(log: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in log.records if r.levelno >= logging.WARNING]


def test_the_installed_uvicorn_and_websockets_have_all_the_lean_protocols_use(
    server_log: pytest.LogCaptureFixture,
) -> None:
    assert lean_protocols_missing() == []
    for chosen in (choose_protocols("auto"), choose_protocols()):
        assert chosen.name == "lean" and chosen.batch_accept
        assert chosen.http is LeanHttpToolsProtocol and chosen.ws is LeanWebSocketProtocol
    assert warnings_in(server_log) == []
    messages = [r.getMessage() for r in server_log.records]
    assert len(messages) == 2
    assert all(m.startswith("serving on agenthost's lean protocols (uvicorn ") for m in messages)


def test_a_missing_method_is_named_and_auto_falls_back_to_stock_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, server_log: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr(HttpToolsProtocol, "handle_websocket_upgrade")
    name = "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.handle_websocket_upgrade"
    assert lean_protocols_missing() == [name]
    assert guard_missing() == [name], "the connection guard uses it too"
    assert choose_protocols("auto") == STOCK
    (warning,) = warnings_in(server_log)
    assert FALLBACK in warning and name in warning and "stock" in warning
    assert "no header or body deadline" in warning


def test_a_name_only_the_lean_protocols_use_keeps_the_guard_on_stock(
    monkeypatch: pytest.MonkeyPatch, server_log: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr(WebSocketsSansIOProtocol, "start_keepalive")
    assert guard_missing() == []
    chosen = choose_protocols("auto")
    assert chosen.name == "stock" and chosen.http == "httptools" and chosen.guard is not None
    limits = ConnectionLimits(10, 30, 5, 100)
    guarded = chosen.http_protocol(limits, Metrics())
    assert isinstance(guarded, type) and issubclass(guarded, ConnectionGuard)
    assert not issubclass(guarded, LeanHttpToolsProtocol)
    (warning,) = warnings_in(server_log)
    assert "no header or body deadline" not in warning


def test_an_attribute_no_longer_set_where_it_was_is_named(
    monkeypatch: pytest.MonkeyPatch, server_log: pytest.LogCaptureFixture
) -> None:
    def renamed(self: Any, transport: Any) -> None:  # a release that renamed write_paused
        self._transport = transport
        self.read_paused = False
        self.writing_paused = False

    monkeypatch.setattr(FlowControl.__init__, "__code__", renamed.__code__)
    name = "uvicorn.protocols.http.flow_control.FlowControl.__init__: write_paused"
    assert lean_protocols_missing() == [name]
    assert choose_protocols("auto").name == "stock"
    (warning,) = warnings_in(server_log)
    assert name in warning


def test_a_parameter_no_longer_taken_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    signature = inspect.signature(HttpToolsProtocol.__init__)
    renamed = [
        p.replace(name="state") if p.name == "app_state" else p
        for p in signature.parameters.values()
    ]
    monkeypatch.setattr(
        HttpToolsProtocol.__init__,
        "__signature__",
        signature.replace(parameters=renamed),
        raising=False,
    )
    assert lean_protocols_missing() == [
        "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.__init__: app_state"
    ]


def test_stock_is_stock_without_a_warning_even_where_lean_would_not_run(
    monkeypatch: pytest.MonkeyPatch, server_log: pytest.LogCaptureFixture
) -> None:
    assert choose_protocols("stock").name == "stock"
    monkeypatch.delattr(WebSocketsSansIOProtocol, "start_keepalive")
    chosen = choose_protocols("stock")
    assert chosen.http == "httptools" and not chosen.batch_accept and chosen.guard is not None
    assert warnings_in(server_log) == []
    assert {r.getMessage() for r in server_log.records} == {
        "serving on uvicorn's stock protocols (--server-protocols stock)"
    }
    monkeypatch.delattr(HttpToolsProtocol, "on_message_begin")
    assert choose_protocols("stock") == STOCK, "without what the guard uses: uvicorn's own"
    (warning,) = warnings_in(server_log)
    assert "HttpToolsProtocol.on_message_begin" in warning


def test_lean_protocols_that_cannot_be_imported_fall_back_to_stock_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, server_log: pytest.LogCaptureFixture
) -> None:
    # As if a release of uvicorn or websockets moved a private module the lean ones import.
    monkeypatch.setitem(sys.modules, "agenthost.runtime.lean_protocols", None)
    assert choose_protocols("auto") == STOCK
    warnings = warnings_in(server_log)
    assert len(warnings) == 1 and "cannot import them" in warnings[0]
    assert "no header or body deadline" in warnings[0]


@pytest.mark.parametrize("choice", ["lean", "", "Stock"])
def test_an_unknown_choice_is_a_value_error(choice: str) -> None:
    with pytest.raises(ValueError, match="unknown server protocols"):
        choose_protocols(choice)


async def check_the_contract(url: str) -> None:
    """A plain turn and its retry, a streamed turn over SSE and its resume, a WebSocket turn,
    and the history the three leave."""
    turns = f"{url}/v1/sessions/contract/turns"
    async with aiohttp.ClientSession() as http:
        plain_key = {"Idempotency-Key": "plain-1"}
        async with http.post(turns, json={"message": "hello"}, headers=plain_key) as resp:
            assert resp.status == 200
            plain = await resp.json()
        assert plain["turn_id"] == "plain-1" and plain["response"]
        async with http.post(turns, json={"message": "hello"}, headers=plain_key) as resp:
            assert resp.status == 200
            assert await resp.json() == plain

        sse_key = {"Idempotency-Key": "sse-1"}
        body = {"message": "stream it", "stream": True}
        async with http.post(turns, json=body, headers=sse_key) as resp:
            assert resp.status == 200 and resp.content_type == "text/event-stream"
            events = parse_sse(await resp.text())
        assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))
        assert [kind for _, kind, _ in events] == ["chunk"] * (len(events) - 1) + ["done"]
        assert len(events) > 2
        sse_text = "".join(data["text"] for _, _, data in events[:-1])
        async with http.get(f"{turns}/sse-1") as resp:
            assert (await resp.json())["response"] == sse_text == events[-1][2]["response"]
        async with http.get(f"{turns}/sse-1/stream", headers={"Last-Event-ID": "1"}) as resp:
            assert resp.status == 200
            assert parse_sse(await resp.text()) == events[1:]

        async with http.ws_connect(f"{url}/v1/sessions/contract/ws") as ws:
            await ws.send_json({"type": "turn", "message": "over a socket", "turn_id": "ws-1"})
            frames: list[dict[str, Any]] = []
            while not frames or frames[-1]["type"] == "chunk":
                frames.append(await ws.receive_json(timeout=10))
        assert [f["type"] for f in frames] == ["chunk"] * (len(frames) - 1) + ["done"]
        assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
        assert len(frames) > 2
        ws_text = "".join(f["text"] for f in frames[:-1])
        assert ws_text == frames[-1]["response"]

        async with http.get(f"{url}/v1/sessions/contract/messages") as resp:
            messages = (await resp.json())["messages"]
        assert [(m["role"], m["turn_id"], m["content"]) for m in messages] == [
            ("user", "plain-1", "hello"),
            ("assistant", "plain-1", plain["response"]),
            ("user", "sse-1", "stream it"),
            ("assistant", "sse-1", sse_text),
            ("user", "ws-1", "over a socket"),
            ("assistant", "ws-1", ws_text),
        ]


@pytest.mark.parametrize(("choice", "direct"), [("auto", True), ("stock", False)])
async def test_only_the_lean_protocols_offer_the_web_layer_a_direct_writer(
    choice: str, direct: bool
) -> None:
    protocols = choose_protocols(choice)
    assembly = assemble(Settings(store="memory://", llm=FAST_LLM, chunk_coalesce_ms=0))
    seen: list[tuple[str, bool]] = []

    async def recorded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            seen.append((scope["type"], DIRECT_WRITER_KEY in scope))
        await assembly.app(scope, receive, send)

    port = free_port()
    config = uvicorn.Config(
        recorded,
        host="127.0.0.1",
        port=port,
        http=protocols.http,
        ws=protocols.ws,
        lifespan="on",
        log_config=None,
        log_level="warning",
    )
    server = DrainingServer(config, assembly.drain, batch_accept=protocols.batch_accept)
    serving = asyncio.ensure_future(server.serve())
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while not server.started:
            assert asyncio.get_running_loop().time() < deadline, "the server did not start"
            assert not serving.done(), "the server stopped while starting"
            await asyncio.sleep(0.01)
        await check_the_contract(f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        await serving
    assert {kind for kind, _ in seen} == {"http", "websocket"}
    assert {has for _, has in seen} == {direct}


def log_lines(server: AgentHostProcess) -> list[dict[str, Any]]:
    """The process's log, one JSON object a line."""
    return [json.loads(line) for line in server.log().splitlines()]


@pytest.mark.parametrize("choice", ["auto", "stock"])
async def test_a_served_process_keeps_the_contract_on_the_protocols_chosen(
    agenthost_factory: Callable[..., AgentHostProcess], choice: str
) -> None:
    server = agenthost_factory(
        llm=FAST_LLM, chunk_coalesce_ms=0, server_protocols=choice, log_level="info"
    )
    await check_the_contract(server.url)
    events = [line["event"] for line in log_lines(server)]
    (serving,) = [e for e in events if e.startswith("serving on")]
    chosen = "agenthost's lean" if choice == "auto" else "uvicorn's stock"
    assert serving.startswith(f"serving on {chosen} protocols")
    assert not any(FALLBACK in e for e in events)


async def test_a_process_on_a_uvicorn_that_lacks_a_name_falls_back_with_one_warning(
    agenthost_factory: Callable[..., AgentHostProcess],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # `agenthost serve` on a uvicorn without `Config.bind_socket`: the batch-accepting
    # start-up needs it, uvicorn's own start-up does not.
    launcher = tmp_path / "agenthost-without-bind-socket"
    launcher.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            """
            import uvicorn

            del uvicorn.Config.bind_socket

            from agenthost.cli import main

            main()
            """
        )
    )
    launcher.chmod(0o755)
    monkeypatch.setattr(agenthost_fixture, "AGENTHOST", str(launcher))
    server = agenthost_factory(llm=FAST_LLM, chunk_coalesce_ms=0, log_level="info")
    await check_the_contract(server.url)
    lines = log_lines(server)
    (warning,) = [line for line in lines if FALLBACK in line["event"]]
    assert warning["level"] == "warning"
    assert "uvicorn.config.Config.bind_socket" in warning["event"]
    assert "serving on uvicorn's stock protocols" in warning["event"]
    assert not any(line["event"].startswith("serving on agenthost's lean") for line in lines)
