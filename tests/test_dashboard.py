"""/dashboard and its data (/admin/fleet, /admin/fleet/stream) against real processes: the
three replicas of `agenthost cluster up --replicas 3` in Chromium, one shown draining during
`agenthost cluster rollout`, the charts moving under `agenthost loadtest`; recent turns,
per-tenant 429s, content only with --log-content; the admin token; accessibility and a
phone's width."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from agenthost.cluster import fleet
from agenthost.cluster.autoscaler import record_decision
from agenthost.cluster.state import load
from agenthost.registry import AutoscaleDecision
from tests.fixtures.agenthost import AGENTHOST, AgentHostProcess, free_port, wait_until
from tests.page_checks import assert_accessible, assert_fits_width

TOKEN = "dashboard-admin-token"
TIMEOUT_MS = 120_000


def call(url: str, *, token: str | None = None, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode())
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read() or b"null")


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    context.close()


def connect(page: Page, base: str, token: str) -> None:
    page.goto(f"{base}/dashboard")
    page.get_by_label("Admin token").fill(token)
    page.get_by_label("Admin token").press("Enter")


def chart_max(page: Page, chart: str) -> float:
    return float(page.locator(f"#chart-{chart}").get_attribute("data-max") or 0)


def test_the_fleet_data_for_scripts_needs_the_admin_token(
    agenthost_factory: Callable[..., AgentHostProcess],
) -> None:
    server = agenthost_factory(admin_token=TOKEN, heartbeat_interval=0.5)
    with pytest.raises(urllib.error.HTTPError) as refused:
        call(f"{server.url}/admin/fleet")
    assert refused.value.code == 401
    fleet_now = call(f"{server.url}/admin/fleet", token=TOKEN)
    [me] = fleet_now["processes"]
    assert me["process_id"] == fleet_now["served_by"]
    assert me["address"] == server.url and me["state"] == "ready" and me["rss_bytes"] > 0
    document = call(f"{server.url}/openapi.json")
    assert {"/admin/fleet", "/admin/fleet/stream", "/dashboard", "/playground"} <= set(
        document["paths"]
    )
    # The stream: one `fleet` event per heartbeat interval.
    request = urllib.request.Request(f"{server.url}/admin/fleet/stream")
    request.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(request, timeout=10) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = []
        while len(events) < 2:
            line = stream.readline().decode()
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert events[1]["now"] > events[0]["now"]


def test_two_processes_on_one_store_each_show_both(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str
) -> None:
    one = agenthost_factory(store=redis_url, admin_token=TOKEN, heartbeat_interval=0.5)
    two = agenthost_factory(store=redis_url, admin_token=TOKEN, heartbeat_interval=0.5)

    def addresses(server: AgentHostProcess) -> set[str]:
        return {p["address"] for p in call(f"{server.url}/admin/fleet", token=TOKEN)["processes"]}

    for server in (one, two):
        wait_until(lambda s=server: {one.url, two.url} <= addresses(s), 30,  # type: ignore[misc]
                   "each process to list both")  # fmt: skip


def test_recent_turns_rejections_and_no_content_without_log_content(
    page: Page, agenthost_factory: Callable[..., AgentHostProcess], screenshot_dir: Path
) -> None:
    server = agenthost_factory(admin_token=TOKEN, heartbeat_interval=0.5,
                               rate_limit_turns_per_minute=1, llm="sim://")  # fmt: skip
    call(f"{server.url}/v1/sessions/dash-a/turns", body={"message": "a secret message"})
    with pytest.raises(urllib.error.HTTPError) as limited:
        call(f"{server.url}/v1/sessions/dash-a/turns", body={"message": "again"})
    assert limited.value.code == 429
    connect(page, server.url, "wrong token")
    expect(page.get_by_role("alert")).to_contain_text("401")
    connect(page, server.url, TOKEN)
    rows = page.locator("#recent-turns tbody tr")
    expect(rows.first).to_contain_text("completed")
    expect(page.locator("#rejections tbody tr").first).to_contain_text("1")
    expect(page.locator("#content-note")).to_contain_text("--log-content")
    assert "a secret message" not in page.content()
    assert_accessible(page)


def test_message_content_is_shown_with_log_content(
    page: Page, agenthost_factory: Callable[..., AgentHostProcess]
) -> None:
    server = agenthost_factory(admin_token=TOKEN, heartbeat_interval=0.5, log_content=True,
                               llm="sim://")  # fmt: skip
    call(f"{server.url}/v1/sessions/dash-b/turns", body={"message": "shown to the admin"})
    connect(page, server.url, TOKEN)
    expect(page.locator("#recent-turns tbody")).to_contain_text("shown to the admin")


def test_the_dashboard_fits_a_phone(
    browser: Browser, agenthost_factory: Callable[..., AgentHostProcess], screenshot_dir: Path
) -> None:
    server = agenthost_factory(admin_token=TOKEN, heartbeat_interval=0.5)
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        connect(page, server.url, TOKEN)
        expect(page.locator("#processes tbody tr")).to_have_count(1)
        # Nothing but the server itself: no CDN, works offline.
        assert requested and all(url.startswith(server.url + "/") for url in requested)
        assert_fits_width(page)
        assert_accessible(page)
        page.screenshot(path=str(screenshot_dir / "dashboard-390px.png"), full_page=True)
    finally:
        context.close()


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Iterator[str]:
    directory = str(tmp_path / "cluster")
    yield directory
    if (Path(directory) / "cluster.json").exists():
        fleet.down(directory, log=lambda _: None)


@pytest.mark.slow
def test_a_three_replica_fleet_its_rollout_and_its_load(
    page: Page, cluster_dir: str, tmp_path: Path, screenshot_dir: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    subprocess.run(
        [AGENTHOST, "cluster", "up", "--replicas", "3", "--port", str(port), "--dir",
         cluster_dir, "--llm", "sim://?latency_ms=5000", "--drain-timeout", "30"],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    connect(page, base, load(cluster_dir).admin_token)
    ready = page.locator("#processes tbody tr[data-state=ready]")
    expect(ready).to_have_count(3)
    ports = {f"127.0.0.1:{r.port}" for r in load(cluster_dir).replicas}
    assert {page.locator("#processes tbody tr").nth(i).locator("td").nth(1).inner_text()
            .removeprefix("http://") for i in range(3)} == ports  # fmt: skip

    report = tmp_path / "loadtest.json"
    # Load until the rollout is over, then Ctrl-C: the turns in flight finish and are verified.
    loadtest = subprocess.Popen(
        [AGENTHOST, "loadtest", "--url", base, "--sessions", "12", "--duration", "600",
         "--quiet", "--json", str(report)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: chart_max(page, "inflight") > 0, 90, "the in-flight chart to rise")
        wait_until(lambda: chart_max(page, "turns") > 0 and chart_max(page, "p99") > 0, 90,
                   "the turns/s and p99 charts to rise")  # fmt: skip
        page.screenshot(path=str(screenshot_dir / "dashboard.png"), full_page=True)

        rollout = subprocess.Popen(
            [AGENTHOST, "cluster", "rollout", "--dir", cluster_dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            expect(page.locator("#processes tbody tr[data-state=draining]").first).to_be_visible()
            page.screenshot(path=str(screenshot_dir / "dashboard-rollout.png"), full_page=True)
        finally:
            assert rollout.wait(300) == 0
    finally:
        loadtest.send_signal(signal.SIGINT)
        assert loadtest.wait(300) == 0, "the loadtest lost, duplicated or failed turns"
    expect(ready).to_have_count(3)
    new_ports = {f"127.0.0.1:{r.port}" for r in load(cluster_dir).replicas}
    assert not new_ports & ports
    outcome = json.loads(report.read_text())
    assert outcome["failed"] == 0 and outcome["answered"] > 0


def test_autoscaler_decisions_and_the_grafana_link(
    page: Page, agenthost_factory: Callable[..., AgentHostProcess], tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'fleet.db'}"
    server = agenthost_factory(store=store, admin_token=TOKEN, heartbeat_interval=0.5,
                               grafana_url="https://grafana.example/d/agenthost")  # fmt: skip
    # What `agenthost cluster up --autoscale` writes after each evaluation (from a thread of
    # its own: playwright's sync API runs an event loop in this one).
    decision = AutoscaleDecision(
        at=time.time(), reason="scale up", current=1, desired=3,
        inputs={"metric": "agenthost_inflight_turns", "values": {"r1": 25.0}, "target": 10},
    )  # fmt: skip
    with ThreadPoolExecutor(1) as pool:
        pool.submit(record_decision, store, decision).result(60)
    connect(page, server.url, TOKEN)
    row = page.locator("#decisions tbody tr").first
    expect(row).to_contain_text("scale up")
    expect(row).to_contain_text("1 → 3")
    expect(row).to_contain_text('"r1":25')
    expect(page.get_by_role("link", name="Grafana dashboard (long history)")).to_have_attribute(
        "href", "https://grafana.example/d/agenthost"
    )
