"""The AG-UI adapter, driven by `@ag-ui/client`'s HttpAgent and its event verifier (Node)
against a real agenthost; the wire format and edges in process."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from agenthost.core.settings import Settings
from agenthost.runtime.assembly import Assembly, assemble
from tests.fixtures.agenthost import AgentHostProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentHostProcess]:
    tmp = tmp_path_factory.mktemp("agui")
    proc = AgentHostProcess(
        {
            "store": f"sqlite:///{tmp / 'agui.db'}",
            "llm": "sim://?tokens_per_s=2000&words=12",
            "chunk_coalesce_ms": 0,
        },
        tmp / "agenthost.log",
    )
    proc.start()
    yield proc
    proc.stop()


def test_http_agent_runs_a_verified_turn_and_a_retried_run_commits_once(
    server: AgentHostProcess, node_script: Callable[..., Any]
) -> None:
    thread, run = "th-" + uuid.uuid4().hex[:8], str(uuid.uuid4())
    out = node_script("ag_ui_client.mjs", server.url, thread, "hello agent", run)
    types = out["types"]
    assert types[:2] == ["RUN_STARTED", "TEXT_MESSAGE_START"]
    assert types[-2:] == ["TEXT_MESSAGE_END", "RUN_FINISHED"]
    assert set(types[2:-2]) == {"TEXT_MESSAGE_CONTENT"}
    [answer] = [m for m in out["newMessages"] if m["role"] == "assistant"]
    assert "hello agent" in answer["content"]
    assert out["retryText"] == answer["content"] and out["retryLast"] == "RUN_FINISHED"
    url = f"{server.url}/v1/sessions/{thread}/messages"
    with urllib.request.urlopen(url, timeout=10) as r:
        messages = json.load(r)["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "hello agent"),
        ("assistant", answer["content"]),
    ]


# -- in process -------------------------------------------------------------------------------


@pytest.fixture
def assembly(tmp_path: Path) -> Assembly:
    return assemble(Settings(store=f"sqlite:///{tmp_path / 'g.db'}", max_body_bytes=4096))


@pytest.fixture
def client(assembly: Assembly) -> Iterator[TestClient]:
    with TestClient(assembly.app, raise_server_exceptions=False) as c:
        yield c


def run_input(content: Any = "hi", run_id: str = "r1") -> dict[str, Any]:
    return {
        "threadId": "t1",
        "runId": run_id,
        "state": {},
        "tools": [],
        "context": [],
        "forwardedProps": {},
        "messages": [{"id": "u1", "role": "user", "content": content}],
    }


def test_text_parts_are_read_and_events_are_sse(client: TestClient) -> None:
    resp = client.post("/ag-ui/v1/run", json=run_input([{"type": "text", "text": "parts"}]))
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(ln[6:]) for ln in resp.text.splitlines() if ln.startswith("data: ")]
    assert events[0] == {"type": "RUN_STARTED", "threadId": "t1", "runId": "r1"}
    assert "parts" in "".join(e.get("delta", "") for e in events)


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b'{"threadId": "t", "runId": "r", "messages": []}',
        b'{"threadId": "t/x", "runId": "r", "messages": [{"role": "user", "content": "x"}]}',
        b'{"runId": "r", "messages": [{"role": "user", "content": "x"}]}',
        b'{"threadId": "t", "runId": "r", "messages": [{"role": "user", "content": 3}]}',
    ],
)
def test_bad_input_gets_a_clear_4xx(client: TestClient, body: bytes) -> None:
    resp = client.post("/ag-ui/v1/run", content=body, headers={"content-type": "application/json"})
    assert 400 <= resp.status_code < 500, resp.text


def test_a_draining_process_answers_503(client: TestClient, assembly: Assembly) -> None:
    assembly.engine.draining = True
    resp = client.post("/ag-ui/v1/run", json=run_input())
    assert resp.status_code == 503 and resp.headers["retry-after"]


def test_a_reset_ends_the_message_and_starts_a_new_one() -> None:
    """The run went again after its process died: the void attempt's message ends, and the
    new attempt's text goes to a new message (the client's text is never doubled in one)."""
    from agenthost.brokers.base import StreamEvent
    from agenthost.web.adapters.ag_ui import AGUIRunFrames

    frames = AGUIRunFrames("t1", "r1")
    body = frames(StreamEvent(1, "chunk", b'{"text":"half an"}'))
    body += frames(StreamEvent(2, "reset", b"{}"))
    body += frames(StreamEvent(3, "chunk", b'{"text":"whole answer"}'))
    done = b'{"session_id":"t1","turn_id":"r1","response":"whole answer"}'
    body += frames(StreamEvent(4, "done", done))
    events = [json.loads(ln[6:]) for ln in body.decode().splitlines() if ln.startswith("data: ")]
    assert [(e["type"], e.get("messageId"), e.get("delta")) for e in events] == [
        ("RUN_STARTED", None, None),
        ("TEXT_MESSAGE_START", "a-r1", None),
        ("TEXT_MESSAGE_CONTENT", "a-r1", "half an"),
        ("TEXT_MESSAGE_END", "a-r1", None),
        ("TEXT_MESSAGE_START", "a-r1-2", None),
        ("TEXT_MESSAGE_CONTENT", "a-r1-2", "whole answer"),
        ("TEXT_MESSAGE_END", "a-r1-2", None),
        ("RUN_FINISHED", None, None),
    ]
