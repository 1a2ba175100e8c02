"""The OpenAI Chat Completions adapter, driven by the official `openai` SDK against a real
agenthost process serving the simulated model; its edges (bad input, drain, task prompts,
the metrics) in process."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from starlette.testclient import TestClient

from agenthost.core.settings import Settings
from agenthost.runtime.assembly import Assembly, assemble
from agenthost.web.adapters.conversation import ChatMessageIn, conversation_ids
from tests.fixtures.agenthost import AgentHostProcess, wait_until


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentHostProcess]:
    tmp = tmp_path_factory.mktemp("openai")
    proc = AgentHostProcess(
        {
            "store": f"sqlite:///{tmp / 'openai.db'}",
            "llm": "sim://?tokens_per_s=2000&words=12",
            "chunk_coalesce_ms": 0,
        },
        tmp / "agenthost.log",
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def sdk(server: AgentHostProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/openai/v1", api_key="unused", max_retries=0) as c:
        yield c


def get_json(server: AgentHostProcess, path: str) -> Any:
    with urllib.request.urlopen(server.url + path, timeout=10) as resp:
        return json.load(resp)


def session_turns(server: AgentHostProcess, sid: str) -> int:
    turns: int = get_json(server, f"/v1/sessions/{sid}")["turns"]
    return turns


def history(server: AgentHostProcess, sid: str) -> list[tuple[str, str]]:
    messages = get_json(server, f"/v1/sessions/{sid}/messages")["messages"]
    return [(m["role"], m["content"]) for m in messages]


def test_models_lists_the_agent(sdk: openai.OpenAI) -> None:
    ids = [m.id for m in sdk.models.list()]
    assert ids == ["agenthost", "agenthost-tasks"]


def test_a_plain_completion_is_a_committed_turn(
    sdk: openai.OpenAI, server: AgentHostProcess
) -> None:
    sid = "oa-" + uuid.uuid4().hex[:8]
    answer = sdk.chat.completions.create(
        model="agenthost",
        messages=[{"role": "user", "content": "hello there"}],
        extra_headers={"X-Session-Id": sid},
    )
    text = answer.choices[0].message.content
    assert text and "hello there" in text  # the simulator echoes the message
    assert answer.choices[0].finish_reason == "stop" and answer.id.startswith("chatcmpl-")
    assert history(server, sid) == [("user", "hello there"), ("assistant", text)]


def test_a_streamed_completion_ends_with_done_and_is_committed(
    sdk: openai.OpenAI, server: AgentHostProcess
) -> None:
    sid = "oa-" + uuid.uuid4().hex[:8]
    stream = sdk.chat.completions.create(
        model="agenthost",
        messages=[{"role": "user", "content": [{"type": "text", "text": "stream me"}]}],
        stream=True,
        extra_headers={"X-OpenWebUI-Chat-Id": sid},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert len(chunks) > 2 and "stream me" in text
    assert history(server, sid) == [("user", "stream me"), ("assistant", text)]


@pytest.mark.parametrize("stream", [False, True])
def test_a_retry_with_the_same_key_commits_once(
    sdk: openai.OpenAI, server: AgentHostProcess, stream: bool
) -> None:
    sid = "oa-" + uuid.uuid4().hex[:8]
    headers = {"X-Session-Id": sid, "Idempotency-Key": "k-" + uuid.uuid4().hex}
    texts = []
    for _ in range(2):
        if stream:
            chunks = sdk.chat.completions.create(
                model="agenthost",
                messages=[{"role": "user", "content": "once"}],
                stream=True,
                extra_headers=headers,
            )
            texts.append("".join(c.choices[0].delta.content or "" for c in chunks))
        else:
            answer = sdk.chat.completions.create(
                model="agenthost",
                messages=[{"role": "user", "content": "once"}],
                extra_headers=headers,
            )
            texts.append(answer.choices[0].message.content or "")
    assert texts[0] and texts[0] == texts[1]
    assert session_turns(server, sid) == 1


def test_a_resent_conversation_is_a_retry_and_a_longer_one_a_new_turn(
    sdk: openai.OpenAI, server: AgentHostProcess
) -> None:
    """A chat UI resends the whole history: "regenerate" gets the committed answer, the
    next message is the next turn; with no session header the opening names the session."""
    opening = "my id is " + uuid.uuid4().hex
    first = [{"role": "system", "content": "be brief"}, {"role": "user", "content": opening}]
    a1 = sdk.chat.completions.create(model="agenthost", messages=first)  # type: ignore[arg-type]
    again = sdk.chat.completions.create(model="agenthost", messages=first)  # type: ignore[arg-type]
    assert again.choices[0].message.content == a1.choices[0].message.content
    reply = a1.choices[0].message.content or ""
    longer = [*first, {"role": "assistant", "content": reply}, {"role": "user", "content": "next"}]
    sdk.chat.completions.create(model="agenthost", messages=longer)  # type: ignore[arg-type]
    sid, _, _ = conversation_ids({}, [ChatMessageIn(**m) for m in first], None)
    assert [role for role, _ in history(server, sid)] == ["user", "assistant"] * 2
    assert history(server, sid)[2] == ("user", "next")


def test_conversation_ids_come_from_headers_first() -> None:
    msgs = [ChatMessageIn("user", "a"), ChatMessageIn("assistant", "b"), ChatMessageIn("user", "c")]
    sid, tid, text = conversation_ids(
        {"x-conversation-id": "lc-1", "x-message-id": "m1"}, msgs, None
    )
    assert (sid, tid, text) == ("lc-1", "m1", "c")
    derived, turn, _ = conversation_ids({}, msgs, None)
    assert turn.startswith("u2-") and derived.startswith("oa-")
    assert conversation_ids({}, msgs[:1], None)[0] == derived  # same opening, same session
    assert conversation_ids({}, msgs[:1], "another-user")[0] != derived


# -- in process: edges ----------------------------------------------------------------------


@pytest.fixture
def assembly(tmp_path: Path) -> Assembly:
    return assemble(Settings(store=f"sqlite:///{tmp_path / 'oa.db'}", max_body_bytes=4096))


@pytest.fixture
def client(assembly: Assembly) -> Iterator[TestClient]:
    with TestClient(assembly.app, raise_server_exceptions=False) as c:
        yield c


URL = "/openai/v1/chat/completions"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{", 400),
        (b"[]", 422),
        (b'{"messages": []}', 422),
        (b'{"messages": [{"role": "system", "content": "x"}]}', 422),
        (b'{"messages": [{"role": "user", "content": null}]}', 422),
        (b'{"messages": [{"role": "user", "content": 5}]}', 422),
        (b'{"messages": [{"role": "user", "content": "' + b"x" * 5000 + b'"}]}', 413),
    ],
)
def test_bad_requests_get_a_clear_4xx(client: TestClient, body: bytes, status: int) -> None:
    resp = client.post(URL, content=body, headers={"content-type": "application/json"})
    assert resp.status_code == status, resp.text
    assert set(resp.json()["error"]) == {"code", "message"}


def test_a_bad_session_header_is_a_400(client: TestClient) -> None:
    resp = client.post(
        URL, json={"messages": [{"role": "user", "content": "x"}]}, headers={"X-Session-Id": "a/b"}
    )
    assert resp.status_code == 400


def test_a_draining_process_answers_503_with_retry_after(
    client: TestClient, assembly: Assembly
) -> None:
    assembly.engine.draining = True
    for stream in (False, True):
        resp = client.post(
            URL, json={"messages": [{"role": "user", "content": "x"}], "stream": stream}
        )
        assert resp.status_code == 503 and resp.headers["retry-after"]
        assert resp.json()["error"]["code"] == "draining"


@pytest.mark.parametrize("stream", [False, True])
def test_title_prompts_go_to_the_llm_not_the_session(client: TestClient, stream: bool) -> None:
    task = "### Task:\nGenerate a concise, 3-5 word title for the chat."
    for body in (
        {"messages": [{"role": "user", "content": task}], "stream": stream},
        {
            "model": "agenthost-tasks",
            "messages": [{"role": "user", "content": "title?"}],
            "stream": stream,
        },
    ):
        resp = client.post(URL, json=body, headers={"X-Session-Id": "titled"})
        assert resp.status_code == 200, resp.text
        if stream:
            lines = [ln for ln in resp.text.splitlines() if ln.startswith("data: ")]
            assert lines[-1] == "data: [DONE]"
            assert json.loads(lines[0][6:])["choices"][0]["delta"]["content"]
        else:
            assert resp.json()["choices"][0]["message"]["content"]
    assert client.get("/v1/sessions/titled").status_code == 404


def test_turns_are_counted_by_protocol(client: TestClient) -> None:
    client.post(URL, json={"messages": [{"role": "user", "content": "x"}]})
    client.post("/v1/sessions/n1/turns", json={"message": "x"})
    metrics = client.get("/metrics").text
    assert 'agenthost_protocol_requests_total{protocol="openai_chat"} 1' in metrics
    assert 'agenthost_protocol_requests_total{protocol="native"} 1' in metrics


def test_the_routes_are_in_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "post" in paths[URL] and "get" in paths["/openai/v1/models"]


def test_a_retry_after_the_process_died_streams_the_new_attempt_alone(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str
) -> None:
    """A streams a turn and is killed mid-answer; once its lease lapsed, the same request
    sent to B (a retry: the same turn) runs it again, and the stream B sends is the new
    attempt's alone: the dead attempt's text, void and impossible to take back in this
    protocol, is not sent again before it."""
    common = {
        "store": redis_url,
        "llm": "sim://?ttft_ms=50&tokens_per_s=20&words=40",
        "chunk_coalesce_ms": 0,
        "lease_ttl": 1,
    }
    a = agenthost_factory(**common)
    b = agenthost_factory(**common)
    sid = "s-" + uuid.uuid4().hex[:10]
    request: dict[str, Any] = {
        "model": "agenthost",
        "messages": [{"role": "user", "content": "tell me a long story"}],
        "stream": True,
        "extra_headers": {"X-Session-Id": sid, "Idempotency-Key": "retried-1"},
    }
    with openai.OpenAI(base_url=a.url + "/openai/v1", api_key="-", max_retries=0) as on_a:
        stream = on_a.chat.completions.create(**request)
        seen = 0
        for chunk in stream:
            seen += bool(chunk.choices and chunk.choices[0].delta.content)
            if seen == 3:
                break
        a.kill()  # mid-answer
        stream.close()
    wait_until(
        lambda: get_json(b, f"/v1/sessions/{sid}/turns/retried-1")["status"] == "pending",
        30,
        "A's lease to lapse",
    )
    with openai.OpenAI(base_url=b.url + "/openai/v1", api_key="-", max_retries=0) as on_b:
        text = "".join(
            c.choices[0].delta.content or ""
            for c in on_b.chat.completions.create(**request)
            if c.choices
        )
    committed = history(b, sid)
    assert [role for role, _ in committed] == ["user", "assistant"]
    assert text == committed[1][1]
