"""Traces: a turn's spans (server, turn, llm.chat, store steps) continue the caller's W3C
`traceparent`, the LLM request carries the LLM span's, the response carries the server
span's as `traceresponse`; `--otel console` prints spans from a real server."""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.testclient import TestClient

from agenthost.core.settings import Settings
from agenthost.llm import create_llm
from agenthost.llm.instrumented import InstrumentedLLM
from agenthost.observability.logs import bind_tenant
from agenthost.observability.metrics import Metrics
from agenthost.observability.tracing import Tracing, create_tracing
from agenthost.runtime.assembly import build_app
from agenthost.stores.instrumented import InstrumentedStore
from agenthost.stores.memory import MemoryStore
from agenthost.turns.agents import wrap_agent
from agenthost.turns.engine import TurnEngine
from tests.fixtures.agenthost import AGENTHOST, AgentHostProcess, wait_until

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "captured",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


class CapturingLLM:
    """An OpenAI-compatible chat-completions endpoint on loopback that answers "hi" and
    keeps the headers of every request."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        captured = self.headers

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                captured.append({k.lower(): v for k, v in self.headers.items()})
                body = json.dumps(COMPLETION).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def capturing_llm() -> Iterator[CapturingLLM]:
    server = CapturingLLM()
    yield server
    server.close()


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracing(exporter: InMemorySpanExporter) -> Tracing:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider)


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def test_a_turn_continues_the_callers_trace_to_the_llm(
    tracing: Tracing, exporter: InMemorySpanExporter, capturing_llm: CapturingLLM
) -> None:
    llm = create_llm(capturing_llm.base_url, model="captured")
    app = build_app(Settings(llm="sim://", store="memory://"), llm=llm, tracing=tracing)
    with TestClient(app) as client:
        resp = client.post(
            "/v1/sessions/t1/turns",
            json={"message": "hello"},
            headers={"traceparent": TRACEPARENT, "Idempotency-Key": "turn-1"},
        )
    assert resp.status_code == 200 and resp.json()["response"] == "hi"
    spans = exporter.get_finished_spans()
    server = by_name(spans, "POST /v1/sessions/{session_id}/turns")
    turn = by_name(spans, "turn")
    llm_span = by_name(spans, "llm.chat")
    assert {s.context.trace_id for s in spans} == {int(TRACE_ID, 16)}
    assert server.kind == SpanKind.SERVER and parent_of(server) == int(PARENT_ID, 16)
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    assert parent_of(turn) == server.context.span_id
    assert turn.attributes == {
        "agenthost.session_id": "t1",
        "agenthost.turn_id": "turn-1",
        "agenthost.outcome": "completed",
    }
    assert llm_span.kind == SpanKind.CLIENT and parent_of(llm_span) == turn.context.span_id
    for step in ("store.begin_turn", "store.commit_turn"):
        assert parent_of(by_name(spans, step)) == turn.context.span_id
    # The model server saw the LLM span as the caller.
    (sent,) = capturing_llm.headers
    assert sent["traceparent"] == f"00-{TRACE_ID}-{llm_span.context.span_id:016x}-01"
    # The client learns the server span.
    assert resp.headers["traceresponse"] == f"00-{TRACE_ID}-{server.context.span_id:016x}-01"


def test_without_a_traceparent_the_server_span_starts_a_trace(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    with TestClient(
        build_app(Settings(llm="sim://", store="memory://"), tracing=tracing)
    ) as client:
        resp = client.post("/v1/sessions/t2/turns", json={"message": "hi"})
    assert resp.status_code == 200
    spans = exporter.get_finished_spans()
    server = by_name(spans, "POST /v1/sessions/{session_id}/turns")
    assert server.parent is None
    assert resp.headers["traceresponse"].split("-")[1] == f"{server.context.trace_id:032x}"
    assert parent_of(by_name(spans, "turn")) == server.context.span_id


def test_a_failed_turn_marks_its_spans(tracing: Tracing, exporter: InMemorySpanExporter) -> None:
    settings = Settings(llm="sim://", store="memory://", llm_model="error-500")
    with TestClient(build_app(settings, tracing=tracing)) as client:
        assert client.post("/v1/sessions/t3/turns", json={"message": "x"}).status_code == 502
    spans = exporter.get_finished_spans()
    turn = by_name(spans, "turn")
    assert turn.attributes is not None and turn.attributes["agenthost.outcome"] == "failed"
    assert turn.status.status_code == StatusCode.ERROR
    llm_span = by_name(spans, "llm.chat")
    assert llm_span.status.status_code == StatusCode.ERROR
    assert [e.name for e in llm_span.events] == ["exception"]
    assert parent_of(by_name(spans, "store.fail_turn")) == turn.context.span_id


async def test_the_turn_span_names_the_tenant(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    metrics = Metrics()
    store = InstrumentedStore(MemoryStore("memory://"), metrics, tracing)
    await store.open()

    async def agent(turn: Any) -> str:
        return "ok"

    engine = TurnEngine(
        store,
        wrap_agent(agent),
        InstrumentedLLM(create_llm("sim://"), metrics, tracing),
        metrics=metrics,
        tracing=tracing,
    )
    bind_tenant("acme")
    await engine.run_turn("t4", "hello", turn_id="turn-4")
    await store.close()
    turn = by_name(exporter.get_finished_spans(), "turn")
    assert turn.attributes is not None and turn.attributes["agenthost.tenant"] == "acme"
    assert turn.parent is None


def test_streamed_llm_calls_carry_the_span_only_while_asking(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    with TestClient(
        build_app(Settings(llm="sim://", store="memory://"), tracing=tracing)
    ) as client:
        resp = client.post("/v1/sessions/t5/turns", json={"message": "hi", "stream": True})
    assert resp.status_code == 200 and "event: done" in resp.text
    spans = exporter.get_finished_spans()
    turn = by_name(spans, "turn")
    llm_span = by_name(spans, "llm.chat")
    assert llm_span.attributes is not None and llm_span.attributes["agenthost.llm.stream"]
    assert parent_of(llm_span) == turn.context.span_id
    server = by_name(spans, "POST /v1/sessions/{session_id}/turns")
    publishes = [s for s in spans if s.name == "broker.publish"]
    # Chunks are published within the request, never under the LLM call that produced them.
    allowed = {turn.context.span_id, server.context.span_id}
    assert publishes and {parent_of(s) for s in publishes} <= allowed


def test_otlp_without_its_exporter_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="opentelemetry-exporter-otlp"):
        create_tracing("otlp")
    result = subprocess.run(
        [AGENTHOST, "serve", "--otel", "otlp", "--store", "memory://", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "opentelemetry-exporter-otlp" in result.stderr


def test_a_real_server_prints_spans_with_otel_console(
    agenthost_factory: Callable[..., AgentHostProcess],
) -> None:
    proc = agenthost_factory(otel="console")
    request = urllib.request.Request(
        f"{proc.url}/v1/sessions/t6/turns",
        data=b'{"message": "hi"}',
        headers={"content-type": "application/json", "traceparent": TRACEPARENT},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200
        traceresponse = resp.headers["traceresponse"]
    assert traceresponse.startswith(f"00-{TRACE_ID}-")
    server_span_id = traceresponse.split("-")[2]

    def printed() -> bool:
        log = proc.log()
        return f'"span_id": "0x{server_span_id}"' in log and '"name": "turn"' in log

    wait_until(printed, 10, "the console exporter to print the server and turn spans")
    assert f'"trace_id": "0x{TRACE_ID}"' in proc.log()
    assert f'"parent_id": "0x{PARENT_ID}"' in proc.log()
