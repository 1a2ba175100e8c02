"""GET /metrics: every family exported, histograms well formed, each counter counting what
its name says; and the Grafana dashboard asks only for metrics the server exports."""

from __future__ import annotations

import json
import math
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from agenthost.brokers import StreamEvent, create_broker
from agenthost.brokers.instrumented import PUBLISH_SAMPLE, InstrumentedBroker
from agenthost.core.settings import Settings
from agenthost.llm import create_llm
from agenthost.observability.metrics import (
    FAST_BUCKETS,
    METRIC_NAMES,
    Histogram,
    Metrics,
    rejection_reason,
)
from agenthost.queue import QueuedTurn, create_queue
from agenthost.runtime.assembly import build_app
from agenthost.stores import create_store
from agenthost.stores.instrumented import InstrumentedStore
from agenthost.turns.agents import Turn, wrap_agent
from agenthost.turns.engine import TurnEngine
from tests.fixtures.agenthost import AgentHostProcess, async_wait_until

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana" / "agenthost-dashboard.json"

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Family:
    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        self.samples: list[tuple[str, dict[str, str], float]] = []

    def value(self, sample: str = "", **labels: str) -> float:
        """The one sample named `name + sample` whose labels include `labels`."""
        found = [
            v
            for n, ls, v in self.samples
            if n == self.name + sample and all(ls.get(k) == x for k, x in labels.items())
        ]
        assert len(found) == 1, f"{self.name}{sample} {labels}: {found}"
        return found[0]


def parse_exposition(text: str) -> dict[str, Family]:
    """The Prometheus text format (0.0.4), strictly: every sample belongs to a family
    declared by a TYPE line before it, and parses as name{labels} value."""
    families: dict[str, Family] = {}
    current: Family | None = None
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram"), line
            assert name not in families, f"{name} declared twice"
            current = families[name] = Family(name, kind)
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, raw_labels, raw_value = match.groups()
        assert current is not None and name.startswith(current.name), line
        labels = dict(_LABEL.findall(raw_labels or ""))
        current.samples.append((name, labels, float(raw_value)))
    return families


def check_histogram(family: Family) -> None:
    """Buckets cumulative and ending in +Inf == _count, per label set."""
    series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    for name, labels, value in family.samples:
        if name == family.name + "_bucket":
            key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            series.setdefault(key, []).append((float(labels["le"]), value))
    assert series, f"{family.name} has no buckets"
    for key, buckets in series.items():
        bounds = [b for b, _ in buckets]
        counts = [c for _, c in buckets]
        assert bounds == sorted(bounds) and bounds[-1] == math.inf
        assert counts == sorted(counts), f"{family.name}{key} buckets not cumulative"
        assert counts[-1] == family.value("_count", **dict(key))


async def remembering_agent(turn: Turn) -> str:
    """Asks the model deterministically (temperature 0), so a response cache can answer."""
    return await turn.llm.complete([{"role": "user", "content": turn.message}], temperature=0)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        llm="sim://",
        store=f"sqlite:///{tmp_path / 'm.db'}",
        max_body_bytes=4096,
        admin_token="admin-token",
    )
    with TestClient(build_app(settings), raise_server_exceptions=False) as c:
        yield c


def scrape(client: TestClient) -> dict[str, Family]:
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse_exposition(resp.text)


def test_every_family_is_exported_after_a_turn(client: TestClient) -> None:
    assert client.post("/v1/sessions/s1/turns", json={"message": "one"}).status_code == 200
    streamed = client.post("/v1/sessions/s1/turns", json={"message": "two", "stream": True})
    assert streamed.status_code == 200 and "event: done" in streamed.text
    families = scrape(client)
    assert set(families) == set(METRIC_NAMES)
    for family in families.values():
        if family.kind == "histogram":
            check_histogram(family)
    turns = families["agenthost_turns_total"]
    assert turns.value(outcome="completed") == 2
    assert families["agenthost_process_cpu_seconds_total"].value() > 0
    assert families["agenthost_turn_duration_seconds"].value("_count") == 2
    # The demo agent asks the LLM once per turn; the streamed turn streams it.
    assert families["agenthost_llm_request_duration_seconds"].value("_count") == 2
    assert families["agenthost_llm_time_to_first_token_seconds"].value("_count") == 1
    store = families["agenthost_store_operation_duration_seconds"]
    assert store.value("_count", operation="begin_turn") == 2
    assert store.value("_count", operation="commit_turn") == 2
    broker = families["agenthost_broker_operation_duration_seconds"]
    # Chunks, then done: publishes made at once are timed one in 16, the first one included.
    assert broker.value("_count", operation="publish") >= 1
    assert families["agenthost_llm_cache_requests_total"].value(result="hit") == 0
    assert families["agenthost_active_connections"].value() == 0
    assert families["agenthost_inflight_turns"].value() == 0


def test_rejections_are_counted_by_reason(client: TestClient) -> None:
    assert client.get("/v1/sessions/nobody").status_code == 404
    assert client.get("/no/such/route").status_code == 404
    assert client.post("/v1/sessions/s1/turns", content=b"{not json").status_code == 400
    assert client.post("/v1/sessions/s1/turns", json={"nope": 1}).status_code == 422
    assert client.post("/v1/sessions/s1/turns", content=b"x" * 5000).status_code == 413
    assert client.post("/admin/drain").status_code == 401
    drain = client.post("/admin/drain", headers={"Authorization": "Bearer admin-token"})
    assert drain.status_code == 202
    assert client.post("/v1/sessions/s1/turns", json={"message": "late"}).status_code == 503
    rejections = scrape(client)["agenthost_rejections_total"]
    counts = {labels["reason"]: value for _, labels, value in rejections.samples}
    assert counts == {
        "not_found": 2,
        "invalid": 2,
        "payload_too_large": 1,
        "unauthorized": 1,
        "draining": 1,
        "overloaded": 0,
        "session_busy": 0,
        "rate_limited": 0,
        "concurrency_limited": 0,
    }
    assert scrape(client)["agenthost_turns_total"].value(outcome="refused") == 1


def test_llm_errors_are_counted_by_code(tmp_path: Path) -> None:
    settings = Settings(store="memory://", llm="sim://", llm_model="error-500")
    with TestClient(build_app(settings), raise_server_exceptions=False) as client:
        assert client.post("/v1/sessions/s/turns", json={"message": "hi"}).status_code == 502
        families = scrape(client)
    assert families["agenthost_llm_errors_total"].value(code="llm_unavailable") == 1
    assert families["agenthost_llm_request_duration_seconds"].value("_count") == 1
    assert families["agenthost_turns_total"].value(outcome="failed") == 1


def test_llm_cache_hits_and_misses_are_exported() -> None:
    settings = Settings(llm="sim://", store="memory://", llm_cache="memory://")
    app = build_app(settings, agent=wrap_agent(remembering_agent))
    with TestClient(app) as client:
        for session in ("a", "b", "c"):
            resp = client.post(f"/v1/sessions/{session}/turns", json={"message": "same"})
            assert resp.status_code == 200
        cache = scrape(client)["agenthost_llm_cache_requests_total"]
    assert cache.value(result="miss") == 1
    assert cache.value(result="hit") == 2


async def test_store_and_broker_operations_on_redis_are_timed(redis_url: str) -> None:
    metrics = Metrics()
    store = InstrumentedStore(create_store(redis_url), metrics)
    broker = InstrumentedBroker(create_broker(redis_url), metrics)
    await store.open()
    await broker.open()
    try:
        agent = wrap_agent(remembering_agent)
        engine = TurnEngine(store, agent, create_llm("sim://"), metrics=metrics)
        record = await engine.run_turn("redis-timed", "hi")
        assert await store.list_messages("redis-timed", 10) is not None
        await broker.publish("redis-timed", record.turn_id, StreamEvent(1, "done", b"{}"))
        assert await broker.exists("redis-timed", record.turn_id)
    finally:
        await broker.close()
        await store.close()
    families = parse_exposition(metrics.render().decode())
    store_ops = families["agenthost_store_operation_duration_seconds"]
    assert store_ops.value("_count", operation="begin_turn") == 1
    assert store_ops.value("_count", operation="list_messages") == 1
    assert 0 < store_ops.value("_sum", operation="commit_turn") < 1
    broker_ops = families["agenthost_broker_operation_duration_seconds"]
    assert broker_ops.value("_count", operation="publish") == 1
    assert broker_ops.value("_count", operation="exists") == 1
    check_histogram(store_ops)
    check_histogram(broker_ops)


async def test_in_process_publishes_are_timed_one_in_sixteen() -> None:
    """`publish_nowait` times its first call and one in PUBLISH_SAMPLE after it, each timed
    call counted for the untimed ones before it: the count trails by less than the sample."""
    metrics = Metrics()
    broker = InstrumentedBroker(create_broker("memory://"), metrics)
    histogram = metrics.broker_histogram("publish")
    broker.start("s", "t")
    seq = 0

    def publish(n: int) -> None:
        nonlocal seq
        for _ in range(n):
            seq += 1
            assert broker.publish_nowait("s", "t", StreamEvent(seq, "chunk", b'{"text":"x"}'))

    publish(1)
    assert histogram.count == 1
    publish(PUBLISH_SAMPLE - 1)
    assert histogram.count == 1  # untimed so far
    publish(1)
    assert histogram.count == PUBLISH_SAMPLE + 1
    publish(3 * PUBLISH_SAMPLE)
    assert histogram.count == 4 * PUBLISH_SAMPLE + 1
    assert sum(histogram.counts) == histogram.count
    assert 0 < histogram.sum < 1


def test_histogram_bucket_bounds_are_inclusive() -> None:
    h = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 3.0):
        h.observe(value)
    out: list[str] = []
    h.render(out, "x")
    assert out == [
        'x_bucket{le="0.1"} 2',
        'x_bucket{le="1"} 4',
        'x_bucket{le="+Inf"} 5',
        "x_sum 4.650000",
        "x_count 5",
    ]
    assert tuple(sorted(FAST_BUCKETS)) == FAST_BUCKETS


def test_rejection_reasons_follow_code_then_status() -> None:
    assert rejection_reason(503, "draining") == "draining"
    assert rejection_reason(409, "session_busy") == "session_busy"
    assert rejection_reason(429, "concurrency_limited") == "concurrency_limited"
    assert rejection_reason(429, "frame_rate_exceeded") == "rate_limited"
    assert rejection_reason(413, "message_too_long") == "payload_too_large"
    assert rejection_reason(422, "metadata_too_deep") == "invalid"
    assert rejection_reason(403, "forbidden") == "unauthorized"
    assert rejection_reason(502, "agent_error") is None
    assert rejection_reason(503, "store_unavailable") is None
    assert rejection_reason(409, "session_exists") is None


def test_rate_limited_is_counted_by_tenant_class() -> None:
    metrics = Metrics()
    metrics.rate_limited("free")
    metrics.rate_limited("free")
    metrics.rate_limited()
    family = parse_exposition(metrics.render().decode())["agenthost_rate_limited_total"]
    assert family.value(tenant_class="free") == 2
    assert family.value(tenant_class="default") == 1


async def test_the_queues_oldest_age_is_exported_per_tenant_class(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str
) -> None:
    api = agenthost_factory(role="api", store=redis_url, tenant_classes="gold=acme,globex")
    queue = create_queue(redis_url, claim_after=10.0)
    await queue.open()
    try:
        # Queued with no worker to run them: they stay, ageing.
        for session in ("acme/s1", "globex/s2", "zeta/s3"):
            await queue.enqueue(QueuedTurn(session, "t1", "hi", enqueued_at=time.time()))
    finally:
        await queue.close()

    def sampled() -> dict[str, float]:
        text = urllib.request.urlopen(api.url + "/metrics", timeout=5).read().decode()
        family = parse_exposition(text)["agenthost_queue_oldest_age_seconds"]
        return {labels.get("tenant_class", ""): value for _, labels, value in family.samples}

    await async_wait_until(lambda: sampled().get("gold", 0) > 0, 30, "the queue sampled")
    ages = sampled()
    assert set(ages) == {"gold", "other"}  # a bounded label set: the classes and `other`
    assert ages["other"] > 0


def test_the_grafana_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"] and dashboard["schemaVersion"] >= 30
    panels = dashboard["panels"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    assert exprs and all(p.get("title") for p in panels)
    used = set()
    for expr in exprs:
        for name in re.findall(r"\bagenthost_[a-z_]+", expr):
            used.add(re.sub(r"_(bucket|sum|count)$", "", name))
    assert used <= set(METRIC_NAMES), used - set(METRIC_NAMES)
    # Everything an operator is told to watch has a panel.
    for needed in (
        "agenthost_turns_total",
        "agenthost_turn_duration_seconds",
        "agenthost_llm_request_duration_seconds",
        "agenthost_store_operation_duration_seconds",
        "agenthost_broker_operation_duration_seconds",
        "agenthost_rejections_total",
        "agenthost_active_connections",
        "agenthost_inflight_turns",
        "agenthost_llm_cache_requests_total",
    ):
        assert needed in used, needed
    # Datasource variables resolve to a declared template variable.
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert "datasource" in variables
