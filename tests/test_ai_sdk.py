"""The Vercel AI SDK adapter, driven by the `ai` package's own DefaultChatTransport and
readUIMessageStream (Node) against a real agenthost; the wire format and edges in process."""

from __future__ import annotations

import json
import subprocess
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from agenthost.core.settings import Settings
from agenthost.runtime.assembly import Assembly, assemble
from tests.fixtures.agenthost import AgentHostProcess, wait_until
from tests.fixtures.node import JS


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentHostProcess]:
    tmp = tmp_path_factory.mktemp("aisdk")
    proc = AgentHostProcess(
        {
            "store": f"sqlite:///{tmp / 'aisdk.db'}",
            "llm": "sim://?tokens_per_s=60&words=30",
            "chunk_coalesce_ms": 0,
        },
        tmp / "agenthost.log",
    )
    proc.start()
    yield proc
    proc.stop()


def history(server: AgentHostProcess, sid: str) -> list[tuple[str, str]]:
    with urllib.request.urlopen(f"{server.url}/v1/sessions/{sid}/messages", timeout=10) as r:
        return [(m["role"], m["content"]) for m in json.load(r)["messages"]]


def turn_status(server: AgentHostProcess, sid: str, turn_id: str) -> str:
    with urllib.request.urlopen(f"{server.url}/v1/sessions/{sid}/turns/{turn_id}", timeout=10) as r:
        status: str = json.load(r)["status"]
        return status


def test_use_chat_transport_streams_a_committed_turn_and_regenerate_commits_once(
    server: AgentHostProcess, node_script: Callable[..., Any]
) -> None:
    chat = "c-" + uuid.uuid4().hex[:10]
    out = node_script("ai_sdk_client.mjs", server.url, chat, "hello from useChat")
    assert out["idleResume"] is None and out["afterResume"] is None  # 204: nothing runs
    assert out["role"] == "assistant" and "hello from useChat" in out["text"]
    assert out["regenerated"] == out["text"]
    assert history(server, chat) == [("user", "hello from useChat"), ("assistant", out["text"])]


def test_reconnect_to_stream_replays_the_running_turn(
    server: AgentHostProcess, node_script: Callable[..., Any]
) -> None:
    chat = "c-" + uuid.uuid4().hex[:10]
    out = node_script("ai_sdk_client.mjs", server.url, chat, "resume me", "2")
    committed = history(server, chat)
    assert committed[1][0] == "assistant" and out["resumedText"] == committed[1][1]
    assert out["partial"] and committed[1][1].startswith(out["partial"])
    assert out["afterResume"] is None


@pytest.mark.slow
@pytest.mark.parametrize("lapsed", [False, True], ids=["lease-live", "lease-lapsed"])
def test_reconnect_to_stream_after_a_process_is_killed_gets_the_whole_answer_once(
    agenthost_factory: Callable[..., AgentHostProcess],
    redis_url: str,
    node_script: Callable[..., Any],  # installs the clients
    lapsed: bool,
) -> None:
    """Two processes on one Redis: A streams a turn and is killed mid-answer; the client's
    reconnectToStream on B gets the turn run again there, so it ends with the whole answer
    once, committed once. Asked while A's lease lives, B replays A's events, waits the lease
    out, and the reset restarts the message under a new id; asked once it has lapsed, A's
    void events are skipped and the stream is the new attempt's alone."""
    common = {
        "store": redis_url,
        "llm": "sim://?ttft_ms=50&tokens_per_s=20&words=40",
        "chunk_coalesce_ms": 0,
        # Live: long enough for B's resume to come first on a loaded machine.
        "lease_ttl": 1 if lapsed else 6,
    }
    a = agenthost_factory(**common)
    b = agenthost_factory(**common)
    chat = "c-" + uuid.uuid4().hex[:10]
    client = subprocess.Popen(
        ["node", "ai_sdk_reconnect.mjs", a.url, b.url, chat, "tell me a long story", "3"],
        cwd=JS,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout is not None and client.stdin is not None
        ready = json.loads(client.stdout.readline())
        assert ready["ready"] and ready["partial"]
        a.kill()  # mid-answer: the turn's process is gone
        if lapsed:
            wait_until(
                lambda: turn_status(b, chat, f"m-{chat}") == "pending", 30, "A's lease to lapse"
            )
        client.stdin.write("killed\n")
        client.stdin.flush()
        rest, errors = client.communicate(timeout=90)
    finally:
        client.kill()
    assert client.returncode == 0, errors
    out = json.loads(rest.strip().splitlines()[-1])
    committed = history(b, chat)
    assert [role for role, _ in committed] == ["user", "assistant"]  # the turn, once
    answer = committed[1][1]
    assert out["resumedText"] == answer  # the whole answer, once: no void text before it
    starts = [c.split(" ", 1)[1] for c in out["resumedChunks"] if c.startswith("start ")]
    if lapsed:
        assert starts == [f"a-m-{chat}"], out["resumedChunks"]
    else:  # A's events, then the reset restarted the message under a new id
        assert len(starts) == 2 and starts[0] != starts[1], out["resumedChunks"]
    assert out["resumedMessageId"] == starts[-1]
    assert out["resumedChunks"][-1] == "finish"
    assert out["afterResume"] is None  # 204: nothing runs any more


# -- in process: the wire format and edges ---------------------------------------------------


@pytest.fixture
def assembly(tmp_path: Path) -> Assembly:
    return assemble(Settings(store=f"sqlite:///{tmp_path / 'a.db'}", max_body_bytes=4096))


@pytest.fixture
def client(assembly: Assembly) -> Iterator[TestClient]:
    with TestClient(assembly.app, raise_server_exceptions=False) as c:
        yield c


def chat_body(text: str = "hi", mid: str = "m1") -> dict[str, Any]:
    return {
        "id": "chat1",
        "trigger": "submit-message",
        "messages": [{"id": mid, "role": "user", "parts": [{"type": "text", "text": text}]}],
    }


def test_the_stream_speaks_protocol_v1(client: TestClient) -> None:
    resp = client.post("/ai-sdk/v1/chat", json=chat_body())
    assert resp.status_code == 200
    assert resp.headers["x-vercel-ai-ui-message-stream"] == "v1"
    data = [ln[6:] for ln in resp.text.splitlines() if ln.startswith("data: ")]
    assert data[-1] == "[DONE]"
    kinds = [json.loads(d)["type"] for d in data[:-1]]
    assert kinds[:2] == ["start", "text-start"] and kinds[-2:] == ["text-end", "finish"]
    assert set(kinds[2:-2]) == {"text-delta"}
    assert client.get("/ai-sdk/v1/chat/chat1/stream").status_code == 204


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{", 400),
        (b'{"id": "c", "messages": []}', 422),
        (b'{"id": "c/x", "messages": [{"id": "m", "role": "user", "parts": '
         b'[{"type": "text", "text": "x"}]}]}', 400),
        (b'{"id": "c", "messages": [{"role": "user", "parts": [{"type": "text", "text": "x"}]}]}',
         422),
        (b'{"id": "c", "messages": [{"id": "m", "role": "user", "parts": [{"type": "file"}]}]}',
         422),
    ],
)  # fmt: skip
def test_bad_requests_get_a_clear_4xx(client: TestClient, body: bytes, status: int) -> None:
    resp = client.post(
        "/ai-sdk/v1/chat", content=body, headers={"content-type": "application/json"}
    )
    assert resp.status_code == status, resp.text


def test_a_draining_process_answers_503(client: TestClient, assembly: Assembly) -> None:
    assembly.engine.draining = True
    resp = client.post("/ai-sdk/v1/chat", json=chat_body())
    assert resp.status_code == 503 and resp.headers["retry-after"]


def test_a_reset_restarts_the_message_under_a_new_id() -> None:
    from agenthost.brokers.base import StreamEvent
    from agenthost.web.adapters.ai_sdk import UIStreamFrames

    frames = UIStreamFrames("t1")
    body = frames(StreamEvent(1, "reset", b"{}"))  # nothing said yet: nothing to restart
    body += frames(StreamEvent(2, "chunk", b'{"text":"half"}'))
    body += frames(StreamEvent(3, "reset", b"{}"))
    body += frames(StreamEvent(4, "done", b'{"session_id":"c","turn_id":"t1","response":"whole"}'))
    data = [ln[6:] for ln in body.decode().splitlines() if ln.startswith("data: ")]
    assert data[-1] == "[DONE]"
    assert [json.loads(d) for d in data[:-1]] == [
        {"type": "start", "messageId": "a-t1"},
        {"type": "text-start", "id": "text-t1"},
        {"type": "text-delta", "id": "text-t1", "delta": "half"},
        {"type": "text-end", "id": "text-t1"},
        {"type": "start", "messageId": "a-t1-3"},
        {"type": "text-start", "id": "text-t1-3"},
        {"type": "text-delta", "id": "text-t1-3", "delta": "whole"},  # replayed whole
        {"type": "text-end", "id": "text-t1-3"},
        {"type": "finish", "finishReason": "stop"},
    ]
