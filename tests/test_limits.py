"""Input limits: each exceeded limit gets its own error code and status, on every route that
takes the input; depth is measured without recursion; the frame-rate bucket refills."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from agenthost.core.errors import FrameRateExceeded
from agenthost.core.input_limits import FrameRateLimiter, InputLimits, metadata_depth
from agenthost.core.settings import SETTINGS_HELP, Settings
from agenthost.runtime.assembly import build_app


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        llm="sim://",
        store=f"sqlite:///{tmp_path / 'limits.db'}",
        max_message_chars=100,
        max_metadata_bytes=200,
        max_metadata_depth=3,
    )
    with TestClient(build_app(settings)) as c:
        yield c


def nested(depth: int) -> dict[str, Any]:
    """A dict `depth` levels deep: {"k": {"k": ... {}}}."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


def error_of(resp: Any) -> tuple[int, str]:
    return resp.status_code, resp.json()["error"]["code"]


def test_depth_counts_containers_without_recursion() -> None:
    assert metadata_depth("x", 8) == 0
    assert metadata_depth({}, 8) == 1
    assert metadata_depth({"a": [1, {"b": []}], "c": 2}, 8) == 4
    assert metadata_depth(nested(5), 8) == 5
    # Far past the interpreter's recursion limit: no RecursionError, and the walk stops early.
    assert metadata_depth(nested(100_000), 8) == 9


def test_the_message_limit_on_turns_and_chat(client: TestClient) -> None:
    ok = client.post("/v1/sessions/m1/turns", json={"message": "x" * 100})
    assert ok.status_code == 200
    long = {"message": "x" * 101}
    assert error_of(client.post("/v1/sessions/m1/turns", json=long)) == (413, "message_too_long")
    assert error_of(client.post("/chat/m1", json=long)) == (413, "message_too_long")
    # Characters, not bytes: 100 four-byte characters are within the limit.
    assert client.post("/chat/m1", json={"message": "\U0001f600" * 100}).status_code == 200


def test_the_metadata_size_limit_on_turns_and_sessions(client: TestClient) -> None:
    small = {"note": "y" * 150}
    assert client.post(
        "/v1/sessions/m2/turns", json={"message": "hi", "metadata": small}
    ).is_success
    big = {"note": "y" * 200}
    turn = client.post("/v1/sessions/m2/turns", json={"message": "hi", "metadata": big})
    assert error_of(turn) == (413, "metadata_too_large")
    create = client.post("/v1/sessions", json={"session_id": "m3", "metadata": big})
    assert error_of(create) == (413, "metadata_too_large")
    assert client.get("/v1/sessions/m3").status_code == 404


def test_the_metadata_depth_limit_on_turns_and_sessions(client: TestClient) -> None:
    ok = client.post("/v1/sessions", json={"session_id": "d1", "metadata": nested(3)})
    assert ok.status_code == 201
    deep = {"message": "hi", "metadata": nested(4)}
    assert error_of(client.post("/v1/sessions/d1/turns", json=deep)) == (422, "metadata_too_deep")
    create = client.post("/v1/sessions", json={"session_id": "d2", "metadata": nested(4)})
    assert error_of(create) == (422, "metadata_too_deep")
    # Lists count too.
    listy = {"message": "hi", "metadata": {"a": [[1]], "b": [[[2]]]}}
    assert error_of(client.post("/v1/sessions/d1/turns", json=listy)) == (422, "metadata_too_deep")


def test_json_nested_past_the_decoder_is_a_400_not_a_500(client: TestClient) -> None:
    hostile = '{"message": "hi", "metadata": {"a": ' + "[" * 5000 + "]" * 5000 + "}}"
    turn = client.post("/v1/sessions/j1/turns", content=hostile)
    assert error_of(turn) == (400, "json_too_deep")
    # An unknown field of the reference design's endpoint is skipped by the decoder, deeply.
    chat = '{"message": "hi", "extra": ' + "[" * 5000 + "]" * 5000 + "}"
    assert error_of(client.post("/chat/j1", content=chat)) == (400, "json_too_deep")


def test_the_body_limit_still_comes_first(tmp_path: Path) -> None:
    settings = Settings(
        llm="sim://", store="memory://", max_body_bytes=1024, max_message_chars=10_000
    )
    with TestClient(build_app(settings)) as c:
        resp = c.post("/v1/sessions/b1/turns", json={"message": "x" * 2000})
    assert error_of(resp) == (413, "payload_too_large")


def test_the_openapi_document_names_each_limit_code(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    turn = doc["paths"]["/v1/sessions/{session_id}/turns"]["post"]["responses"]
    for code in ("payload_too_large", "message_too_long", "metadata_too_large"):
        assert code in turn["413"]["description"]
    assert "metadata_too_deep" in turn["422"]["description"]
    assert "json_too_deep" in turn["400"]["description"]
    create = doc["paths"]["/v1/sessions"]["post"]["responses"]
    assert {"413", "422"} <= set(create)


def test_the_frame_rate_bucket_allows_a_burst_then_refills() -> None:
    now = [0.0]
    bucket = FrameRateLimiter(5, clock=lambda: now[0])
    for _ in range(5):
        bucket.take()
    with pytest.raises(FrameRateExceeded):
        bucket.take()
    now[0] += 0.2  # one token back
    bucket.take()
    with pytest.raises(FrameRateExceeded):
        bucket.take()
    now[0] += 10.0  # never more than one second's worth
    for _ in range(5):
        bucket.take()
    with pytest.raises(FrameRateExceeded):
        bucket.take()


def test_limits_come_from_settings_and_are_validated() -> None:
    settings = Settings(max_message_chars=7, max_metadata_bytes=70, max_metadata_depth=2)
    assert InputLimits.from_settings(settings) == InputLimits(7, 70, 2)
    for field, bad in (
        ("max_message_chars", 0),
        ("max_metadata_bytes", 1),
        ("max_metadata_depth", 0),
        ("ws_max_frame_bytes", 10),
        ("ws_max_frames_per_s", 0),
    ):
        with pytest.raises(ValueError, match=field):
            Settings(**dict[str, Any]({field: bad}))
        assert field in SETTINGS_HELP
    env = {"AGENTHOST_WS_MAX_FRAMES_PER_S": "2.5", "AGENTHOST_MAX_METADATA_DEPTH": "4"}
    from_env = Settings.from_env(env)
    assert (from_env.ws_max_frames_per_s, from_env.max_metadata_depth) == (2.5, 4)
