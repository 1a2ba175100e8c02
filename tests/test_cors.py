"""CORS: off by default; preflights answered for every route for the configured origins;
`*` never with credentials; a bad origin refused at start-up. And in Chromium: a page on an
allowed origin streams a turn with fetch (native SSE and the AI SDK adapter), a page on
another origin is refused by the browser."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser
from starlette.testclient import TestClient

from agenthost.core.settings import Settings
from agenthost.runtime.assembly import build_app
from agenthost.web.cors import parse_origins
from tests.fixtures.agenthost import AgentHostProcess, http_status

APP = "https://app.example.com"
ROUTES = [
    ("POST", "/v1/sessions/s1/turns"),
    ("POST", "/v1/sessions"),
    ("GET", "/v1/sessions/s1/messages"),
    ("GET", "/v1/sessions/s1/turns/t1/stream"),
    ("DELETE", "/v1/sessions/s1"),
    ("POST", "/openai/v1/chat/completions"),
    ("GET", "/openai/v1/models"),
]


def client_for(tmp_path: Path, origins: str) -> TestClient:
    settings = Settings(store=f"sqlite:///{tmp_path / 'cors.db'}", cors_origins=origins)
    return TestClient(build_app(settings), raise_server_exceptions=False)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with client_for(tmp_path, f"{APP},http://localhost:3000") as c:
        yield c


def preflight(client: TestClient, method: str, path: str, origin: str = APP) -> object:
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_answers_a_preflight(client: TestClient, method: str, path: str) -> None:
    resp = preflight(client, method, path)
    assert resp.status_code == 200  # type: ignore[attr-defined]
    headers = resp.headers  # type: ignore[attr-defined]
    assert headers["access-control-allow-origin"] == APP
    assert headers["access-control-allow-credentials"] == "true"
    assert method in headers["access-control-allow-methods"]
    allowed = headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "idempotency-key" in allowed


def test_an_unlisted_origin_gets_no_grant(client: TestClient) -> None:
    resp = preflight(client, "POST", "/v1/sessions", "https://evil.example")
    assert resp.status_code == 400  # type: ignore[attr-defined]
    assert "access-control-allow-origin" not in resp.headers  # type: ignore[attr-defined]
    plain = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in plain.headers


def test_answers_carry_the_grant_and_expose_retry_after(client: TestClient) -> None:
    resp = client.post("/v1/sessions/s1/turns", json={"message": "hi"}, headers={"Origin": APP})
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == APP
    assert "retry-after" in resp.headers["access-control-expose-headers"].lower()
    streamed = client.post(
        "/v1/sessions/s1/turns", json={"message": "hi", "stream": True}, headers={"Origin": APP}
    )
    assert streamed.headers["access-control-allow-origin"] == APP
    assert "event: done" in streamed.text


def test_off_by_default(tmp_path: Path) -> None:
    with client_for(tmp_path, "") as c:
        resp = preflight(c, "POST", "/v1/sessions")
        assert "access-control-allow-origin" not in resp.headers  # type: ignore[attr-defined]
        assert (
            c.get("/healthz", headers={"Origin": APP}).headers.get("access-control-allow-origin")
            is None
        )


def test_any_origin_never_comes_with_credentials(tmp_path: Path) -> None:
    with client_for(tmp_path, "*") as c:
        resp = preflight(c, "POST", "/v1/sessions", "https://anyone.example")
        headers = resp.headers  # type: ignore[attr-defined]
        assert headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in headers
        got = c.get("/healthz", headers={"Origin": "https://anyone.example", "Cookie": "a=b"})
        assert got.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in got.headers


@pytest.mark.parametrize(
    "bad", ["example.com", "https://a.example/path", "ftp://a", "*,https://a.b"]
)
def test_a_bad_origin_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="cors_origins"):
        parse_origins(bad)
    assert parse_origins(" https://a.example/ , http://localhost:3000") == [
        "https://a.example",
        "http://localhost:3000",
    ]


# -- in a browser: Chromium on another origin streams a turn -------------------------------

PAGE = b"<!doctype html><title>another origin</title><p>a front end on another origin</p>"

# What a front end does: fetch with a stream reader, reading the body as it arrives.
STREAM_WITH_FETCH = """async ([url, body, headers]) => {
  try {
    const resp = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", ...headers },
      body: JSON.stringify(body),
    });
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let text = "";
    let reads = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      reads += 1;
      text += decoder.decode(value, { stream: true });
    }
    return { status: resp.status, type: resp.headers.get("content-type"), text, reads };
  } catch (error) {
    return { refused: String(error) };
  }
}"""


@pytest.fixture
def page_origins() -> Iterator[tuple[str, str]]:
    """Two static sites on loopback ports of their own: two origins, one page each."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(PAGE)))
            self.end_headers()
            self.wfile.write(PAGE)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Page) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    allowed, other = (f"http://127.0.0.1:{s.server_address[1]}" for s in servers)
    yield allowed, other
    for server in servers:
        server.shutdown()
        server.server_close()


def sse_data(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


def test_a_page_on_an_allowed_origin_streams_a_turn_and_another_origin_is_refused(
    browser: Browser,
    agenthost_factory: Callable[..., AgentHostProcess],
    page_origins: tuple[str, str],
) -> None:
    allowed, other = page_origins
    agenthost = agenthost_factory(
        llm="sim://?tokens_per_s=100&words=12", chunk_coalesce_ms=0, cors_origins=allowed
    )
    page = browser.new_page()
    try:
        page.goto(allowed + "/")
        # The native SSE endpoint, with a header that needs the preflight's grant.
        native = page.evaluate(
            STREAM_WITH_FETCH,
            [
                f"{agenthost.url}/v1/sessions/from-page/turns",
                {"message": "hello from a page", "stream": True},
                {"Idempotency-Key": "page-1"},
            ],
        )
        assert native.get("status") == 200, native
        assert native["type"].startswith("text/event-stream")
        events = [json.loads(d) for d in sse_data(native["text"])]
        assert "hello from a page" in events[-1]["response"]  # the done event
        assert "".join(e.get("text", "") for e in events[:-1]) == events[-1]["response"]
        # The Vercel AI SDK adapter's UI message stream.
        chat = {
            "id": "ai-sdk-page",
            "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
        }
        ai_sdk = page.evaluate(STREAM_WITH_FETCH, [f"{agenthost.url}/ai-sdk/v1/chat", chat, {}])
        assert ai_sdk.get("status") == 200, ai_sdk
        data = sse_data(ai_sdk["text"])
        assert data[-1] == "[DONE]"
        kinds = [json.loads(d)["type"] for d in data[:-1]]
        assert kinds[0] == "start" and "text-delta" in kinds and kinds[-1] == "finish"

        # The same request from a page on an origin not listed: the browser refuses it
        # (its preflight gets no grant), and the turn is never sent.
        page.goto(other + "/")
        refused = page.evaluate(
            STREAM_WITH_FETCH,
            [
                f"{agenthost.url}/v1/sessions/from-elsewhere/turns",
                {"message": "hello", "stream": True},
                {"Idempotency-Key": "page-2"},
            ],
        )
        assert "refused" in refused and "fetch" in refused["refused"].lower(), refused
    finally:
        page.close()
    assert http_status(f"{agenthost.url}/v1/sessions/from-page") == 200
    assert http_status(f"{agenthost.url}/v1/sessions/from-elsewhere") == 404
