"""One route table serves every route: the router's routes, the fast lane's, the OpenAPI
document and the Kubernetes facts all come from it, the WebSocket included."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient

from agenthost.core.settings import Settings
from agenthost.k8s.facts import server_facts
from agenthost.runtime.assembly import assemble
from agenthost.web.endpoints import Endpoint
from agenthost.web.routes import FastLane, route_pattern

WS_PATH = "/v1/sessions/{session_id}/ws"
TURNS_PATH = "/v1/sessions/{session_id}/turns"


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(assemble(Settings(llm="sim://", store="memory://")).app) as c:
        yield c


def table_of(app: Any) -> tuple[Endpoint, ...]:
    """The route table the app was built from, as its fast lane holds it."""
    stack = app.build_middleware_stack()
    while not isinstance(stack, FastLane):
        stack = stack.app
    return stack.endpoints


def test_every_route_of_the_table_is_served_by_the_router_and_documented(
    client: TestClient,
) -> None:
    table = table_of(client.app)
    served = {
        (r.path, "WS" if isinstance(r, WebSocketRoute) else m)
        for r in client.app.routes  # type: ignore[attr-defined]
        if isinstance(r, Route | WebSocketRoute)
        for m in (getattr(r, "methods", None) or {"WS"})
        if m != "HEAD"
    }
    declared = {(ep.path, "WS" if ep.websocket else ep.method) for ep in table}
    assert declared <= served
    assert served - declared == {("/openapi.json", "GET"), ("/docs", "GET")}
    doc = client.get("/openapi.json").json()
    documented = {(path, m.upper()) for path, ops in doc["paths"].items() for m in ops}
    assert documented == {(p, "GET" if m == "WS" else m) for p, m in declared}


def test_the_fast_lane_serves_the_routes_the_table_marks_fast(client: TestClient) -> None:
    fast = {(ep.path, ep.websocket) for ep in table_of(client.app) if ep.fast}
    adapters = {
        "/openai/v1/chat/completions",
        "/openai/v1/responses",
        "/ai-sdk/v1/chat",
        "/ag-ui/v1/run",
    }
    assert fast == {(TURNS_PATH, False), (WS_PATH, True)} | {(p, False) for p in adapters}
    resp = client.post("/v1/sessions/s1/turns", json={"message": "hi"})
    assert resp.status_code == 200 and resp.json()["session_id"] == "s1"
    with client.websocket_connect("/v1/sessions/s1/ws") as ws:
        ws.send_text(msgspec.json.encode({"type": "turn", "message": "over ws"}).decode())
        kinds = []
        while not kinds or kinds[-1] not in ("done", "error"):
            kinds.append(msgspec.json.decode(ws.receive_text())["type"])
    assert kinds[-1] == "done"


def test_the_websocket_route_is_described_as_a_websocket(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    op = doc["paths"][WS_PATH]["get"]
    assert "101" in op["responses"] and "426" in op["responses"]
    frames = op["x-websocket"]
    schemas = doc["components"]["schemas"]
    client_names = {ref["$ref"].rsplit("/", 1)[1] for ref in frames["client-frames"]["anyOf"]}
    server_names = {ref["$ref"].rsplit("/", 1)[1] for ref in frames["server-frames"]["anyOf"]}
    assert client_names == {"TurnFrame", "ResumeFrame"}
    assert server_names == {
        *("ChunkFrame", "ToolFrame", "InterruptFrame", "ResetFrame", "DoneFrame", "ErrorFrame")
    }
    assert schemas["TurnFrame"]["properties"]["type"]["enum"] == ["turn"]
    assert "4001" in op["description"] and "1012" in op["description"]
    page = client.get("/docs").text
    assert "<code>WS</code>" in page and WS_PATH in page


def test_a_plain_request_to_the_websocket_route_is_426(client: TestClient) -> None:
    resp = client.get("/v1/sessions/s1/ws")
    assert resp.status_code == 426
    assert resp.headers["upgrade"] == "websocket"
    assert resp.json()["error"]["code"] == "upgrade_required"


def test_kubernetes_facts_come_from_the_same_table() -> None:
    facts = server_facts()
    assert WS_PATH in facts.route_paths and TURNS_PATH in facts.route_paths
    assert {"/healthz", "/readyz", "/metrics"} <= facts.get_paths


def test_route_patterns_match_whole_segments() -> None:
    pattern = route_pattern(TURNS_PATH)
    match = pattern.fullmatch("/v1/sessions/a.b:c/turns")
    assert match is not None and match.groupdict() == {"session_id": "a.b:c"}
    assert pattern.fullmatch("/v1/sessions/a/b/turns") is None
    assert pattern.fullmatch("/v1/sessions//turns") is None


FORM = re.compile(
    r'<form class="try" data-method="(\w+)" data-path="([^"]+)"( data-websocket="1")?>'
    r"(.*?)</form>",
    re.S,
)
FIELD = re.compile(r'<input name="([^"]+)" data-in="(\w+)"(?: required)?(?: value="([^"]*)")?')
BODY = re.compile(r"<textarea name=body>(.*?)</textarea>", re.S)


def test_docs_has_a_form_per_route_whose_prefilled_request_works(client: TestClient) -> None:
    """Each route of the table opens to a form on /docs; sent as the page's script sends it
    (path fields into the path, the JSON body as written), the prefilled turn, session and
    history requests answer as the API says, and the WebSocket form's frame runs a turn."""
    page = client.get("/docs").text
    forms = FORM.findall(page)
    table = table_of(client.app)
    assert {(m, p) for m, p, _, _ in forms} == {(ep.method, ep.path) for ep in table}
    statuses = {}
    # The turn first, as a reader would: it creates the session the other forms read.
    forms.sort(key=lambda form: (form[0], form[1]) != ("POST", TURNS_PATH))
    for method, path, websocket, inner in forms:
        url = path
        for name, where, value in FIELD.findall(inner):
            if where == "path":
                url = url.replace("{" + name + "}", value or "t1")
        body = html.unescape(BODY.findall(inner)[0]) if BODY.findall(inner) else None
        if websocket:
            with client.websocket_connect(url) as ws:
                ws.send_text(body or "")
                frames = [ws.receive_json()]
                while frames[-1]["type"] == "chunk":
                    frames.append(ws.receive_json())
            assert frames[-1]["type"] == "done", frames
        elif method != "DELETE" and not path.startswith("/admin"):
            resp = client.request(method, url, content=body)
            statuses[(method, path)] = resp.status_code
    assert statuses[("POST", TURNS_PATH)] == 200
    assert statuses[("GET", "/v1/sessions/{session_id}")] == 200
    assert statuses[("GET", "/v1/sessions/{session_id}/messages")] == 200
    assert all(status < 500 for status in statuses.values()), statuses


def test_docs_works_offline_and_describes_the_websocket_protocol(client: TestClient) -> None:
    page = client.get("/docs").text
    assert "<script src" not in page and 'href="http' not in page and "@import" not in page
    protocol = page.split('<h2 id="websocket">', 1)[1]
    for needle in ('"type": "turn"', '"type": "resume"', '"type": "chunk"', "done", "1012"):
        assert needle in protocol, needle
    assert "4001" in protocol and "426" in protocol and "x-websocket" in protocol
