"""An agent's tool calls reach every client as `tool` events, and its interrupts as
`interrupt` events: agenthost's SSE and WebSocket
(`{call_id, name, arguments, result}` after the text before it), the Vercel AI SDK's chat
transport (tool-input-available / tool-output-available parts) and AG-UI's HttpAgent with its
event verifier (TOOL_CALL_START/ARGS/END, TOOL_CALL_RESULT); the committed answer is the text
alone. A plain agent (`turn.tool(...)`) against a real agenthost process."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Literal

import pytest
from websockets.sync.client import connect

from agenthost.client import AgentHostClient, ToolCall
from tests.fixtures.agenthost import AgentHostProcess

AGENT = """
async def agent(turn):
    if turn.message == "ask":
        yield "Before I go on: "
        turn.interrupt({"question": "which city?"}, "i-1")
        return
    yield "looking up. "
    turn.tool("call-1", "get_weather", {"city": "Paris"}, {"sky": "sunny"})
    yield "It is sunny."
"""
ANSWER = "looking up. It is sunny."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentHostProcess]:
    tmp = tmp_path_factory.mktemp("tools")
    (tmp / "toolbot.py").write_text(AGENT)
    proc = AgentHostProcess(
        {"store": f"sqlite:///{tmp / 't.db'}", "app": "toolbot:agent", "chunk_coalesce_ms": 0},
        tmp / "agenthost.log",
        cwd=tmp,
    )
    proc.start()
    yield proc
    proc.stop()


def sse_events(url: str, body: dict[str, Any]) -> list[tuple[str, Any]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "accept": "text/event-stream"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        text = resp.read().decode()
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            events.append((fields.get("event", ""), json.loads(fields["data"])))
    return events


TOOL = {
    "call_id": "call-1",
    "name": "get_weather",
    "arguments": {"city": "Paris"},
    "result": {"sky": "sunny"},
}


def test_sse_and_websocket_carry_the_tool_event_between_the_text(
    server: AgentHostProcess,
) -> None:
    sid = "s-" + uuid.uuid4().hex[:8]
    events = sse_events(f"{server.url}/v1/sessions/{sid}/turns", {"message": "weather?"})
    assert [kind for kind, _ in events] == ["chunk", "tool", "chunk", "done"]
    assert events[1][1] == TOOL
    assert events[-1][1]["response"] == ANSWER

    ws_url = server.url.replace("http://", "ws://") + f"/v1/sessions/{sid}/ws"
    with connect(ws_url) as ws:
        ws.send(json.dumps({"type": "turn", "message": "again?"}))
        frames = []
        while not frames or frames[-1]["type"] not in ("done", "error"):
            frames.append(json.loads(ws.recv(timeout=30)))
    assert [f["type"] for f in frames] == ["chunk", "tool", "chunk", "done"]
    tool = frames[1]
    assert {k: tool[k] for k in TOOL} == TOOL and tool["seq"] == 2


def test_the_ai_sdk_transport_reads_the_tool_parts(
    server: AgentHostProcess, node_script: Callable[..., Any]
) -> None:
    chat = "c-" + uuid.uuid4().hex[:10]
    out = node_script("ai_sdk_client.mjs", server.url, chat, "weather?")
    assert out["text"] == ANSWER
    [tool] = [p for p in out["parts"] if p["type"].startswith("tool-")]
    assert tool["type"] == "tool-get_weather" and tool["state"] == "output-available"
    assert tool["toolCallId"] == "call-1"
    assert tool["input"] == {"city": "Paris"} and tool["output"] == {"sky": "sunny"}


def test_ag_ui_http_agent_verifies_the_tool_call_events(
    server: AgentHostProcess, node_script: Callable[..., Any]
) -> None:
    thread, run = "th-" + uuid.uuid4().hex[:8], str(uuid.uuid4())
    out = node_script("ag_ui_client.mjs", server.url, thread, "weather?", run)
    types = out["types"]
    at = types.index("TOOL_CALL_START")
    assert types[at - 1] == "TEXT_MESSAGE_END"
    assert types[at : at + 4] == [
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
        "TOOL_CALL_RESULT",
    ]
    assert types[-2:] == ["TEXT_MESSAGE_END", "RUN_FINISHED"]
    calls = [c for m in out["newMessages"] for c in (m.get("toolCalls") or [])]
    assert [(c["id"], c["function"]["name"]) for c in calls] == [("call-1", "get_weather")]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    [result] = [m for m in out["newMessages"] if m["role"] == "tool"]
    assert json.loads(result["content"]) == {"sky": "sunny"}
    assert out["retryText"] == ANSWER and out["retryLast"] == "RUN_FINISHED"


def test_a_client_that_waits_for_the_answer_gets_the_text_alone(
    server: AgentHostProcess,
) -> None:
    sid = "p-" + uuid.uuid4().hex[:8]
    request = urllib.request.Request(
        f"{server.url}/v1/sessions/{sid}/turns",
        data=b'{"message": "weather?"}',
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert json.load(resp)["response"] == ANSWER


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_the_python_client_yields_tool_calls_between_the_chunks(
    server: AgentHostProcess, transport: Literal["sse", "ws"]
) -> None:
    async with AgentHostClient(server.url) as client:
        stream = client.stream("c-" + uuid.uuid4().hex[:8], "weather?", transport=transport)
        events = [event async for event in stream]
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Chunk", "ToolCall", "Chunk", "Done"]
    tool = events[1]
    assert isinstance(tool, ToolCall)
    assert (tool.call_id, tool.name, tool.arguments, tool.result) == tuple(TOOL.values())
    assert stream.text == ANSWER


INTERRUPT = {"value": {"question": "which city?"}, "id": "i-1"}


def test_an_interrupt_reaches_sse_websocket_ai_sdk_and_ag_ui(
    server: AgentHostProcess, node_script: Callable[..., Any]
) -> None:
    sid = "i-" + uuid.uuid4().hex[:8]
    events = sse_events(f"{server.url}/v1/sessions/{sid}/turns", {"message": "ask"})
    assert [kind for kind, _ in events] == ["chunk", "interrupt", "done"]
    assert events[1][1] == INTERRUPT

    ws_url = server.url.replace("http://", "ws://") + f"/v1/sessions/{sid}/ws"
    with connect(ws_url) as ws:
        ws.send(json.dumps({"type": "turn", "message": "ask"}))
        frames = []
        while not frames or frames[-1]["type"] not in ("done", "error"):
            frames.append(json.loads(ws.recv(timeout=30)))
    assert [f["type"] for f in frames] == ["chunk", "interrupt", "done"]
    assert {k: frames[1][k] for k in INTERRUPT} == INTERRUPT

    out = node_script("ai_sdk_client.mjs", server.url, "c-" + uuid.uuid4().hex[:10], "ask")
    [part] = [p for p in out["parts"] if p["type"] == "data-interrupt"]
    assert part["data"] == INTERRUPT and out["text"] == "Before I go on: "

    thread, run = "th-" + uuid.uuid4().hex[:8], str(uuid.uuid4())
    out = node_script("ag_ui_client.mjs", server.url, thread, "ask", run)
    assert "CUSTOM" in out["types"] and out["types"][-1] == "RUN_FINISHED"
