"""CORS: off by default; preflights answered for every route for the configured origins;
`*` never with credentials; a bad origin refused at start-up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from agenthost.core.settings import Settings
from agenthost.runtime.assembly import build_app
from agenthost.web.cors import parse_origins

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
