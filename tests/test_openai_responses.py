"""The OpenAI Responses adapter, driven by the official `openai` SDK against a real agenthost
serving the simulated model: conversation = session, streaming, background, chaining with
previous_response_id, and retrieve(stream=True, starting_after=N) mapped to agenthost's
resume; edges in process."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import openai
import pytest
from starlette.testclient import TestClient

from agenthost.core.settings import Settings
from agenthost.runtime.assembly import Assembly, assemble
from agenthost.web.adapters.openai_responses import response_id, response_ref
from tests.fixtures.agenthost import AgentHostProcess, wait_until


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentHostProcess]:
    tmp = tmp_path_factory.mktemp("responses")
    proc = AgentHostProcess(
        {
            "store": f"sqlite:///{tmp / 'responses.db'}",
            "llm": "sim://?tokens_per_s=50&words=12",  # 20 ms a token: distinct deltas under load
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


def history(server: AgentHostProcess, sid: str) -> list[tuple[str, str]]:
    with urllib.request.urlopen(f"{server.url}/v1/sessions/{sid}/messages", timeout=10) as r:
        return [(m["role"], m["content"]) for m in json.load(r)["messages"]]


def test_create_in_a_conversation_and_chain_with_previous_response_id(
    sdk: openai.OpenAI, server: AgentHostProcess
) -> None:
    conv = "conv-" + uuid.uuid4().hex[:8]
    first = sdk.responses.create(model="agenthost", input="first question", conversation=conv)
    assert first.status == "completed" and "first question" in first.output_text
    second = sdk.responses.create(
        model="agenthost",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "second"}]}],
        previous_response_id=first.id,
    )
    assert "second" in second.output_text
    assert [c for _, c in history(server, conv)] == [
        "first question",
        first.output_text,
        "second",
        second.output_text,
    ]
    got = sdk.responses.retrieve(second.id)
    assert got.status == "completed" and got.output_text == second.output_text


def test_a_retry_with_the_same_key_commits_once(
    sdk: openai.OpenAI, server: AgentHostProcess
) -> None:
    conv = "conv-" + uuid.uuid4().hex[:8]
    headers = {"Idempotency-Key": "k-" + uuid.uuid4().hex}
    a = sdk.responses.create(input="once", conversation=conv, model="m", extra_headers=headers)
    b = sdk.responses.create(input="once", conversation=conv, model="m", extra_headers=headers)
    assert a.id == b.id and a.output_text == b.output_text
    assert len(history(server, conv)) == 2


def test_stream_then_resume_after_any_sequence_number(sdk: openai.OpenAI) -> None:
    events = list(sdk.responses.create(model="agenthost", input="stream this", stream=True))
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-1] == "response.completed"
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    text = "".join(d.delta for d in deltas)
    assert len(deltas) > 2 and "stream this" in text
    completed = events[-1].response  # type: ignore[union-attr]
    assert completed.output_text == text
    # Resume from the middle: the deltas after that number, then the end.
    cut = deltas[1].sequence_number
    resumed = list(sdk.responses.retrieve(completed.id, stream=True, starting_after=cut))
    assert resumed[0].type == "response.output_text.delta"
    rest = "".join(e.delta for e in resumed if e.type == "response.output_text.delta")
    assert deltas[0].delta + deltas[1].delta + rest == text
    assert resumed[-1].type == "response.completed"


def test_a_resume_on_another_process_after_a_kill_runs_the_turn_again_in_a_new_item(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str
) -> None:
    """A streams a response and is killed mid-answer; retrieve(stream=True, starting_after=N)
    on B runs the turn again (after A's lease lapses): the void text stays in item 0, the new
    attempt fills a new output item, and the completed response holds the answer once."""
    common = {"store": redis_url, "chunk_coalesce_ms": 0, "lease_ttl": 3}
    # A answers slowly (8 s), so it is surely mid-answer when it is killed, however late a
    # loaded machine lets the client read its third delta; B runs the turn again quickly.
    a = agenthost_factory(llm="sim://?ttft_ms=50&tokens_per_s=5&words=40", **common)
    b = agenthost_factory(llm="sim://?ttft_ms=50&tokens_per_s=200&words=40", **common)
    conv = "conv-" + uuid.uuid4().hex[:8]
    on_a = openai.OpenAI(base_url=a.url + "/openai/v1", api_key="unused", max_retries=0)
    on_b = openai.OpenAI(base_url=b.url + "/openai/v1", api_key="unused", max_retries=0)
    stream = on_a.responses.create(
        model="agenthost", input="tell me a long story", conversation=conv, stream=True
    )
    seen: list[Any] = []
    for event in stream:
        seen.append(event)
        if sum(e.type == "response.output_text.delta" for e in seen) == 3:
            break
    a.kill()  # mid-answer
    stream.close()
    rid = seen[0].response.id
    last = seen[-1].sequence_number
    resumed = list(on_b.responses.retrieve(rid, stream=True, starting_after=last))
    types = [e.type for e in resumed]
    # What A published after the client's position (item 0), then the new attempt's item.
    added = types.index("response.output_item.added")
    assert set(types[:added]) <= {"response.output_text.delta"}, types
    assert types[added + 1] == "response.content_part.added"
    new_item = resumed[added]
    assert new_item.output_index == 1 and new_item.sequence_number > last
    assert all(e.output_index == 0 for e in resumed[:added])
    new_text = "".join(e.delta for e in resumed[added:] if e.type == "response.output_text.delta")
    assert types[-1] == "response.completed"
    completed = resumed[-1].response
    committed = history(b, conv)
    assert [role for role, _ in committed] == ["user", "assistant"]  # the turn, once
    assert new_text == completed.output_text == committed[1][1]
    assert [item.id for item in completed.output] == [new_item.item.id]


def test_background_answers_at_once_and_completes(sdk: openai.OpenAI) -> None:
    started = sdk.responses.create(model="agenthost", input="in the background", background=True)
    assert started.status == "in_progress" and started.background

    def done() -> bool:
        return sdk.responses.retrieve(started.id).status == "completed"

    wait_until(done, 20, "the background response to complete")
    final = sdk.responses.retrieve(started.id)
    assert "in the background" in final.output_text
    replay = list(sdk.responses.retrieve(started.id, stream=True))
    assert replay[-1].type == "response.completed"


def test_a_resume_after_the_final_event_answers_204_at_once(client: TestClient) -> None:
    resp = client.post("/openai/v1/responses", json={"input": "short", "stream": True})
    events = [json.loads(ln[6:]) for ln in resp.text.splitlines() if ln.startswith("data: ")]
    assert events[-1]["type"] == "response.completed"
    rid, final = events[-1]["response"]["id"], events[-1]["sequence_number"]
    url = f"/openai/v1/responses/{rid}?stream=true&starting_after="
    assert client.get(url + str(final)).status_code == 204
    assert client.get(url + str(final + 1)).status_code == 422  # beyond the end
    again = client.get(url + str(final - 1)).text.splitlines()  # the closing events again
    assert json.loads(again[-2][6:])["type"] == "response.completed"  # ends with a blank line


def test_response_ids_name_session_and_turn() -> None:
    rid = response_id("conv-1", "t_abc")
    assert rid.startswith("resp_") and response_ref(rid) == ("conv-1", "t_abc")


# -- in process -------------------------------------------------------------------------------


@pytest.fixture
def assembly(tmp_path: Path) -> Assembly:
    return assemble(Settings(store=f"sqlite:///{tmp_path / 'r.db'}", max_body_bytes=4096))


@pytest.fixture
def client(assembly: Assembly) -> Iterator[TestClient]:
    with TestClient(assembly.app, raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{", 400),
        (b"{}", 422),
        (b'{"input": ""}', 422),
        (b'{"input": [{"role": "system", "content": "x"}]}', 422),
        (b'{"input": "x", "conversation": {"id": 3}}', 422),
        (b'{"input": "x", "conversation": "a/b"}', 400),
        (b'{"input": "x", "previous_response_id": "resp_nope"}', 404),
    ],
)
def test_bad_requests_get_a_clear_4xx(client: TestClient, body: bytes, status: int) -> None:
    resp = client.post("/openai/v1/responses", content=body)
    assert resp.status_code == status, resp.text


@pytest.mark.parametrize("rid", ["resp_nope", "x", "resp_" + "A" * 200, response_id("s", "t")])
def test_unknown_responses_are_404(client: TestClient, rid: str) -> None:
    assert client.get(f"/openai/v1/responses/{rid}").status_code == 404


def test_another_tenants_response_is_404(tmp_path: Path) -> None:
    settings = Settings(store=f"sqlite:///{tmp_path / 'j.db'}", auth="jwt", jwt_secret="s" * 32)

    def bearer(tenant: str) -> dict[str, str]:
        claims = {"tenant": tenant, "exp": int(time.time()) + 600}
        return {"Authorization": "Bearer " + jwt.encode(claims, "s" * 32)}

    with TestClient(assemble(settings).app, raise_server_exceptions=False) as c:
        made: Any = c.post("/openai/v1/responses", json={"input": "x"}, headers=bearer("a"))
        rid = made.json()["id"]
        assert c.get(f"/openai/v1/responses/{rid}", headers=bearer("a")).status_code == 200
        assert c.get(f"/openai/v1/responses/{rid}", headers=bearer("b")).status_code == 404


def test_a_draining_process_answers_503(client: TestClient, assembly: Assembly) -> None:
    assembly.engine.draining = True
    for extra in ({}, {"stream": True}, {"background": True}):
        resp = client.post("/openai/v1/responses", json={"input": "x", **extra})
        assert resp.status_code == 503 and resp.headers["retry-after"]


def test_a_failed_turn_ends_the_stream_with_response_failed() -> None:
    from agenthost.brokers.base import StreamEvent
    from agenthost.web.adapters.openai_responses import ResponseFrames, ResponseObject

    base = ResponseObject(response_id("s", "t"), 0, "agenthost", "in_progress", [], {"id": "s"})
    frames = ResponseFrames(base, 0)
    body = frames(StreamEvent(1, "error", b'{"code":"agent_error","message":"boom"}'))
    events = [json.loads(ln[6:]) for ln in body.decode().splitlines() if ln.startswith("data: ")]
    assert events[0]["type"] == "response.created"
    failed = events[-1]
    assert failed["type"] == "response.failed" and failed["sequence_number"] == 1
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {"code": "agent_error", "message": "boom"}
