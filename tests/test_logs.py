"""Logs: JSON lines carrying request_id, session_id, turn_id and tenant; no message content
unless --log-content, no secrets at all; X-Request-ID echoed."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from starlette.testclient import TestClient

from agenthost.brokers.base import StreamEvent
from agenthost.brokers.redis import RedisBroker
from agenthost.core.settings import Settings
from agenthost.observability.logs import (
    bind_tenant,
    bind_turn,
    configure_logging,
    flush_access_log,
    reset_logging,
)
from agenthost.runtime.assembly import build_app
from tests.fixtures.agenthost import AgentHostProcess, async_wait_until, wait_until

SECRET = "PINEAPPLE-7f3a9c-SECRET"


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of `text` as a JSON object (fails on a line that is not one)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def post_turn(url: str, session_id: str, message: str, headers: dict[str, str]) -> Any:
    request = urllib.request.Request(
        f"{url}/v1/sessions/{session_id}/turns",
        data=json.dumps({"message": message}).encode(),
        headers={"content-type": "application/json", **headers},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.headers, json.load(resp)


def access_line(proc: AgentHostProcess, request_id: str) -> dict[str, Any]:
    """The access line of `request_id`, once the server has written it."""
    found: list[dict[str, Any]] = []

    def written() -> bool:
        found[:] = [
            line
            for line in json_lines(proc.log())
            if line.get("event") == "request" and line.get("request_id") == request_id
        ]
        return bool(found)

    wait_until(written, 10, f"the access line of {request_id}")
    return found[0]


@pytest.fixture
def captured() -> Iterator[Callable[..., io.StringIO]]:
    """`captured(**settings)` sends this process's logs to a StringIO; restored after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def configure(**settings: Any) -> io.StringIO:
        stream = io.StringIO()
        configure_logging(Settings(**settings), stream)
        return stream

    yield configure
    reset_logging()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_access_lines_are_json_with_the_turn_ids_and_no_content(
    agenthost_factory: Callable[..., AgentHostProcess],
) -> None:
    proc = agenthost_factory(log_level="info")
    headers, body = post_turn(proc.url, "log-s1", SECRET, {"X-Request-ID": "req-abc.1"})
    assert headers["x-request-id"] == "req-abc.1"
    line = access_line(proc, "req-abc.1")
    assert line["session_id"] == "log-s1" and line["turn_id"] == body["turn_id"]
    assert line["method"] == "POST" and line["status"] == 200
    assert line["path"] == "/v1/sessions/log-s1/turns" and line["duration_ms"] >= 0
    assert line["level"] == "info" and line["logger"] == "agenthost.access"
    # A request without an id gets one, in the response and in its line.
    headers, _ = post_turn(proc.url, "log-s1", "again", {})
    generated = headers["x-request-id"]
    assert generated and access_line(proc, generated)["session_id"] == "log-s1"
    # uvicorn's own lines are JSON too, and nothing anywhere holds the message.
    lines = json_lines(proc.log())
    assert any(line.get("logger", "").startswith("uvicorn") for line in lines)
    assert SECRET not in proc.log()


def test_log_content_logs_each_turns_message_and_answer(
    agenthost_factory: Callable[..., AgentHostProcess],
) -> None:
    proc = agenthost_factory(log_level="debug", log_content="true")
    _, body = post_turn(proc.url, "log-s2", SECRET, {"X-Request-ID": "req-content"})
    access_line(proc, "req-content")
    turns = [line for line in json_lines(proc.log()) if line.get("event") == "turn"]
    assert len(turns) == 1
    assert turns[0]["message"] == SECRET and turns[0]["response"] == body["response"]
    assert turns[0]["turn_id"] == body["turn_id"] and turns[0]["request_id"] == "req-content"
    assert turns[0]["outcome"] == "completed"


def test_without_log_content_the_turn_line_has_no_text(
    captured: Callable[..., io.StringIO],
) -> None:
    stream = captured(store="memory://", log_level="debug")
    with TestClient(build_app(Settings(llm="sim://", store="memory://"))) as client:
        resp = client.post("/v1/sessions/s/turns", json={"message": SECRET})
        assert resp.status_code == 200
    turns = [line for line in json_lines(stream.getvalue()) if line.get("event") == "turn"]
    assert len(turns) == 1 and "message" not in turns[0] and "response" not in turns[0]
    assert SECRET not in stream.getvalue()


def test_secrets_are_redacted_whatever_log_content_says(
    captured: Callable[..., io.StringIO],
) -> None:
    key = "sk-live-abcdefghijklmnop0123"
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZW5hbnQtMSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    stream = captured(store="memory://", log_content=True, admin_token="admin-XYZ-123")
    log = structlog.get_logger()
    log.warning("auth", authorization=f"Bearer {jwt}", api_key=key, message="kept")
    logging.getLogger("some.library").warning("token was %s, key %s", jwt, key)
    logging.getLogger("some.library").warning("header Authorization: Bearer abc.def.ghi")
    logging.getLogger("some.library").warning("admin token admin-XYZ-123 refused")
    text = stream.getvalue()
    lines = json_lines(text)
    assert len(lines) == 4
    assert lines[0]["authorization"] == "[redacted]" and lines[0]["api_key"] == "[redacted]"
    assert lines[0]["message"] == "kept"  # content is allowed with log_content
    for secret in (key, jwt, "abc.def.ghi", "admin-XYZ-123"):
        assert secret not in text


def test_content_keys_are_redacted_by_default(captured: Callable[..., io.StringIO]) -> None:
    stream = captured(store="memory://")
    structlog.get_logger().info("x", message=SECRET, prompt=SECRET, content=SECRET, n=1)
    (line,) = json_lines(stream.getvalue())
    assert line["message"] == line["prompt"] == line["content"] == "[redacted]"
    assert line["n"] == 1


def test_bound_tenant_and_turn_appear_on_every_line(
    captured: Callable[..., io.StringIO],
) -> None:
    stream = captured(store="memory://")
    bind_tenant("acme")
    logging.getLogger("agenthost.test").warning("from the standard library")
    structlog.get_logger().info("from structlog")
    lines = json_lines(stream.getvalue())
    assert [line["tenant"] for line in lines] == ["acme", "acme"]
    assert lines[0]["logger"] == "agenthost.test" and lines[0]["level"] == "warning"


def test_a_bad_request_id_is_replaced(captured: Callable[..., io.StringIO]) -> None:
    stream = captured(store="memory://", log_level="info")
    with TestClient(build_app(Settings(llm="sim://", store="memory://"))) as client:
        resp = client.get("/healthz", headers={"X-Request-ID": "evil\tid with spaces"})
    echoed = resp.headers["x-request-id"]
    assert echoed and " " not in echoed
    flush_access_log()  # access lines leave in batches
    (line,) = [line for line in json_lines(stream.getvalue()) if line["event"] == "request"]
    assert line["request_id"] == echoed and line["path"] == "/healthz"


def test_console_format_is_for_people(captured: Callable[..., io.StringIO]) -> None:
    stream = captured(store="memory://", log_format="console")
    structlog.get_logger().warning("hello", answer=42)
    text = stream.getvalue()
    assert "hello" in text and "answer" in text and not text.startswith("{")


def test_access_lines_can_be_turned_off(captured: Callable[..., io.StringIO]) -> None:
    stream = captured(store="memory://", log_level="info", access_log=False)
    with TestClient(build_app(Settings(llm="sim://", store="memory://"))) as client:
        assert client.get("/healthz").status_code == 200
    flush_access_log()
    assert not [line for line in json_lines(stream.getvalue()) if line["event"] == "request"]


async def test_a_failed_stream_write_is_logged_with_its_own_turn_not_the_connecting_one(
    captured: Callable[..., io.StringIO], redis_url: str
) -> None:
    """The Redis broker's write replies come back in the context of the request that opened
    its connection; the warning about a failed write names the event's session and turn."""
    stream = captured(store="memory://")
    broker = RedisBroker(redis_url)
    await broker.open()
    try:

        async def first_request() -> None:
            bind_turn("s-connecting", "t-connecting")
            await broker.publish("s-connecting", "t-connecting", StreamEvent(1, "chunk", b"{}"))

        async def second_request() -> None:
            bind_turn("s-other-request", "t-other-request")
            # Event 1 again: Redis refuses an entry id not above the stream's newest.
            broker.publish_nowait("s-failing", "t-failing", StreamEvent(1, "chunk", b"{}"))
            broker.publish_nowait("s-failing", "t-failing", StreamEvent(1, "chunk", b"{}"))

        await asyncio.create_task(first_request())
        await asyncio.create_task(second_request())

        def warned() -> list[dict[str, Any]]:
            return [
                line
                for line in json_lines(stream.getvalue())
                if "not written" in line.get("event", "")
            ]

        await async_wait_until(lambda: bool(warned()), 10, "the failed write's warning")
        (line,) = warned()
        assert (line["session_id"], line["turn_id"]) == ("s-failing", "t-failing")
        assert "request_id" not in line and "tenant" not in line
    finally:
        await broker.close()
