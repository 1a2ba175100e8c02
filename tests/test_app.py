"""The HTTP API against its contract: statuses, error bodies, the generated OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from starlette.testclient import TestClient

from agenthost.core.settings import Settings
from agenthost.runtime.assembly import build_app


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(llm="sim://", store=f"sqlite:///{tmp_path / 'api.db'}", max_body_bytes=4096)
    with TestClient(build_app(settings), raise_server_exceptions=False) as c:
        yield c


def error_code(resp: object) -> str:
    body = resp.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    code: str = body["error"]["code"]
    return code


def test_session_lifecycle(client: TestClient) -> None:
    created = client.post("/v1/sessions", json={"session_id": "abc", "metadata": {"k": 1}})
    assert created.status_code == 201
    assert created.json()["session_id"] == "abc"
    assert created.json()["metadata"] == {"k": 1}
    again = client.post("/v1/sessions", json={"session_id": "abc"})
    assert again.status_code == 409 and error_code(again) == "session_exists"
    got = client.get("/v1/sessions/abc").json()
    assert got["turns"] == 0 and set(got) == {
        "session_id",
        "created_at",
        "updated_at",
        "turns",
        "metadata",
    }
    assert client.delete("/v1/sessions/abc").status_code == 204
    missing = client.get("/v1/sessions/abc")
    assert missing.status_code == 404 and error_code(missing) == "session_not_found"
    assert client.delete("/v1/sessions/abc").status_code == 404


def test_create_without_body_generates_a_random_id(client: TestClient) -> None:
    a = client.post("/v1/sessions").json()["session_id"]
    b = client.post("/v1/sessions").json()["session_id"]
    assert a != b and len(a) > 16


def test_turn_creates_the_session_and_history_pages(client: TestClient) -> None:
    for i in range(3):
        resp = client.post("/v1/sessions/s1/turns", json={"message": f"m{i}"})
        assert resp.status_code == 200
        body = resp.json()
        assert body["session_id"] == "s1" and body["turn_id"]
        assert f"m{i}" in body["response"]  # the simulator echoes the message
    page = client.get("/v1/sessions/s1/messages?limit=4").json()["messages"]
    assert [m["seq"] for m in page] == [2, 3, 4, 5]
    older = client.get(f"/v1/sessions/s1/messages?limit=4&before={page[0]['seq']}").json()
    assert [m["seq"] for m in older["messages"]] == [0, 1]
    assert [m["role"] for m in older["messages"]] == ["user", "assistant"]
    assert client.get("/v1/sessions/s1").json()["turns"] == 3


def test_idempotency_key_returns_the_same_answer(client: TestClient) -> None:
    headers = {"Idempotency-Key": "key-1"}
    first = client.post("/v1/sessions/s2/turns", json={"message": "hi"}, headers=headers).json()
    second = client.post("/v1/sessions/s2/turns", json={"message": "hi"}, headers=headers).json()
    assert first == second and first["turn_id"] == "key-1"
    assert len(client.get("/v1/sessions/s2/messages").json()["messages"]) == 2
    status = client.get("/v1/sessions/s2/turns/key-1").json()
    assert status == {"turn_id": "key-1", "status": "completed", "response": first["response"]}
    assert client.get("/v1/sessions/s2/turns/nope").status_code == 404


def test_an_idempotency_key_sent_with_another_request_is_422(client: TestClient) -> None:
    """Another message or other metadata under the same key is refused (plain, streamed,
    WebSocket, /chat) and the first turn's answer is neither replayed nor replaced."""
    headers = {"Idempotency-Key": "key-2"}
    url = "/v1/sessions/s3/turns"
    first = client.post(url, json={"message": "hi", "metadata": {"a": 1, "b": 2}}, headers=headers)
    assert first.status_code == 200
    for body in ({"message": "bye"}, {"message": "hi"}, {"message": "hi", "metadata": {"a": 2}},
                 {"message": "bye", "stream": True}):  # fmt: skip
        refused = client.post(url, json=body, headers=headers)
        assert refused.status_code == 422 and error_code(refused) == "idempotency_key_reused"
    reused = client.post("/chat/s3", json={"message": "bye"}, headers=headers)
    assert reused.status_code == 422 and error_code(reused) == "idempotency_key_reused"
    with client.websocket_connect("/v1/sessions/s3/ws") as ws:
        ws.send_json({"type": "turn", "message": "bye", "turn_id": "key-2"})
        frame = ws.receive_json()
        assert (frame["type"], frame["code"]) == ("error", "idempotency_key_reused")
    # The same request again (metadata keys in another order, other options): replayed.
    again = client.post(
        url, json={"message": "hi", "metadata": {"b": 2, "a": 1}, "on_busy": "reject"},
        headers=headers,
    )  # fmt: skip
    assert again.status_code == 200 and again.json() == first.json()
    assert len(client.get("/v1/sessions/s3/messages").json()["messages"]) == 2


def test_reference_chat_endpoint(client: TestClient) -> None:
    resp = client.post("/chat/legacy", json={"message": "hello"})
    assert resp.status_code == 200 and set(resp.json()) == {"response"}
    assert len(client.get("/v1/sessions/legacy/messages").json()["messages"]) == 2


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("POST", "/v1/sessions/s/turns", {"content": b"{not json"}, 400, "invalid_json"),
        ("POST", "/v1/sessions/s/turns", {"json": {"msg": "x"}}, 422, "validation_error"),
        ("POST", "/v1/sessions/s/turns", {"json": {"message": ""}}, 422, "validation_error"),
        ("POST", "/v1/sessions/s/turns", {"json": {"message": 5}}, 422, "validation_error"),
        ("POST", "/v1/sessions/s/turns", {"json": [1, 2]}, 422, "validation_error"),
        (
            "POST",
            "/v1/sessions/s/turns",
            {"json": {"message": "x", "on_busy": "later"}},
            422,
            "validation_error",
        ),
        ("POST", "/v1/sessions/s/turns", {"json": {"message": "x" * 5000}}, 413,
         "payload_too_large"),
        ("POST", "/v1/sessions/bad$id/turns", {"json": {"message": "x"}}, 400,
         "invalid_session_id"),
        ("GET", "/v1/sessions/" + "x" * 129, {}, 400, "invalid_session_id"),
        ("POST", "/v1/sessions", {"json": {"session_id": "a b"}}, 422, "validation_error"),
        ("GET", "/v1/sessions/s/messages?limit=0", {}, 422, "validation_error"),
        ("GET", "/v1/sessions/s/messages?limit=abc", {}, 422, "validation_error"),
        ("GET", "/v1/sessions/s/messages?limit=1&limit=2", {}, 422, "validation_error"),
        ("GET", "/v1/sessions/s/messages?before=1&before=2", {}, 422, "validation_error"),
        ("GET", "/v1/sessions/s/messages?before=4611686018427387905", {}, 422,
         "validation_error"),
        ("GET", "/v1/sessions/s/turns/t/stream?after=1&after=2", {}, 422, "validation_error"),
        *[("GET", "/v1/sessions/s/turns/t/stream", {"headers": {"Last-Event-ID": bad}}, 422,
           "validation_error") for bad in ("+1", " 1", "1_0", "-1", "1" * 19, "0x1", "1.0")],
        ("POST", "/v1/sessions/s/turns", {"json": {"message": "x"},
                                          "headers": {"Last-Event-ID": "+1"}}, 422,
         "validation_error"),
        ("POST", "/v1/sessions/s/ws", {}, 405, "method_not_allowed"),
        ("GET", "/v1/sessions/bad$id/ws", {}, 400, "invalid_session_id"),
        ("GET", "/nowhere", {}, 404, "not_found"),
        ("PUT", "/v1/sessions", {}, 405, "method_not_allowed"),
        ("POST", "/v1/sessions/s/turns", {"json": {"message": "x"},
                                          "headers": {"Idempotency-Key": "no spaces"}}, 400,
         "bad_request"),
    ],
)  # fmt: skip
def test_bad_requests_get_clear_errors(
    client: TestClient, method: str, path: str, kwargs: dict[str, object], status: int, code: str
) -> None:
    resp = client.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert resp.status_code == status, resp.text
    assert error_code(resp) == code


def test_a_405_lists_every_method_of_the_path(client: TestClient) -> None:
    for path, allowed in [
        ("/v1/sessions/s", {"GET", "HEAD", "DELETE"}),
        ("/v1/sessions", {"POST"}),
        ("/v1/sessions/s/ws", {"GET"}),
    ]:
        resp = client.request("PUT", path)
        assert resp.status_code == 405 and error_code(resp) == "method_not_allowed"
        assert set(resp.headers["allow"].split(", ")) == allowed, path
    assert client.delete("/v1/sessions/nobody").status_code == 404, "DELETE still routes"
    assert client.head("/v1/sessions/nobody").status_code == 404, "HEAD still routes"


def test_the_document_states_the_bounds_the_server_checks(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    def param(path: str, method: str, name: str) -> dict[str, object]:
        found = [p for p in paths[path][method]["parameters"] if p["name"] == name]
        schema: dict[str, object] = found[0]["schema"]
        return schema

    assert param("/v1/sessions/{session_id}/messages", "get", "before")["maximum"] == 2**62
    for path, method in [
        ("/v1/sessions/{session_id}/turns/{turn_id}/stream", "get"),
        ("/v1/sessions/{session_id}/turns", "post"),
    ]:
        assert param(path, method, "Last-Event-ID")["pattern"] == "^[0-9]{0,18}$"


def test_chunked_body_over_the_limit_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"message": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    resp = client.post("/v1/sessions/s/turns", content=chunks())
    assert resp.status_code == 413 and error_code(resp) == "payload_too_large"


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_streaming_turn_sends_numbered_chunks_then_done(client: TestClient) -> None:
    with client.stream(
        "POST", "/v1/sessions/st/turns", json={"message": "stream me", "stream": True}
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        text = "".join(resp.iter_text())
    events = [block for block in text.split("\n\n") if block.strip()]
    ids = [int(line[4:]) for block in events for line in block.split("\n") if line[:4] == "id: "]
    assert ids == list(range(1, len(events) + 1))
    assert "event: done" in events[-1]
    done = msgspec.json.decode(events[-1].split("data: ", 1)[1])
    chunks = "".join(
        msgspec.json.decode(b.split("data: ", 1)[1])["text"] for b in events if "chunk" in b
    )
    assert chunks == done["response"] and "stream me" in chunks


def test_openapi_document_covers_every_route_with_its_types(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    paths = doc["paths"]
    for path, method in [
        ("/v1/sessions", "post"),
        ("/v1/sessions/{session_id}", "get"),
        ("/v1/sessions/{session_id}", "delete"),
        ("/v1/sessions/{session_id}/messages", "get"),
        ("/v1/sessions/{session_id}/turns", "post"),
        ("/v1/sessions/{session_id}/turns/{turn_id}", "get"),
        ("/chat/{session_id}", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ]:
        assert method in paths[path], (path, method)
    turn_schema = doc["components"]["schemas"]["TurnRequest"]
    assert turn_schema["required"] == ["message"]
    assert set(turn_schema["properties"]["on_busy"]["enum"]) == {"reject", "enqueue", "interrupt"}
    error_schema = doc["components"]["schemas"]["ErrorBody"]
    assert error_schema["required"] == ["error"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/v1/sessions/{session_id}/turns" in docs.text
