"""/playground in Debian's Chromium against real agenthost processes: a turn streams in
several steps, a retry with the same key replays the answer without a second one, a 429 is
shown plainly, a server killed mid-stream on a two-process Redis fleet is survived by
resuming on the other, and the page is accessible and fits a phone's width."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from agenthost.cluster import fleet
from agenthost.cluster.state import load
from tests.fixtures.agenthost import AGENTHOST, AgentHostProcess, free_port, wait_until
from tests.page_checks import RECORD_GROWTH, assert_accessible, assert_fits_width

# The simulated model at a pace a person can watch: every token its own event.
PACED = "sim://?ttft_ms=100&tokens_per_s=20&words=20"
TIMEOUT_MS = 60_000


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    context.close()


def send(page: Page, message: str) -> None:
    """Type the message and press Enter (the keyboard sends)."""
    page.get_by_label("Message", exact=True).fill(message)
    page.get_by_label("Message", exact=True).press("Enter")


def last_answer(page: Page) -> Any:
    return page.locator("#messages li.assistant").last


def wait_done(page: Page) -> None:
    expect(page.locator("#turn-status")).to_have_text("completed", timeout=TIMEOUT_MS)


def test_a_turn_streams_in_steps_and_a_retry_replays_it(
    page: Page, agenthost_factory: Callable[..., AgentHostProcess], screenshot_dir: Path
) -> None:
    server = agenthost_factory(llm=PACED)
    page.goto(f"{server.url}/playground")
    page.get_by_label("Session id").fill("play-stream")
    page.evaluate(RECORD_GROWTH)
    send(page, "hello there")
    wait_done(page)
    lengths: list[int] = page.evaluate("() => window.__answerLengths")
    grown = [n for n in lengths if n > 0]
    assert len(grown) >= 3 and grown == sorted(grown), lengths
    answer = last_answer(page).locator(".text").inner_text()
    assert answer.startswith("sim: hello there")
    key = page.locator("#turn-key").inner_text()
    assert key.startswith("turn-")
    # Every event is listed with its id; the last is `done`.
    events = page.locator("#events li")
    assert events.count() >= 3
    expect(events.last).to_contain_text("done")
    expect(events.first).to_contain_text("#1 chunk")
    expect(page.locator("#metadata")).to_contain_text('"turns": 1')
    page.screenshot(path=str(screenshot_dir / "playground.png"), full_page=True)

    page.get_by_role("button", name="Retry with the same key").click()
    wait_done(page)
    assert page.locator("#turn-key").inner_text() == key
    assert last_answer(page).locator(".text").inner_text() == answer
    history = get_json(f"{server.url}/v1/sessions/play-stream/messages")["messages"]
    assert [(m["role"], m["turn_id"]) for m in history] == [("user", key), ("assistant", key)]
    assert history[1]["content"] == answer

    # The history pages back: reload, open the session, see the same two messages.
    page.reload()
    expect(page.locator("#messages li")).to_have_count(2)


def test_history_pages_and_delete_and_an_unknown_event_type(
    page: Page, agenthost_factory: Callable[..., AgentHostProcess]
) -> None:
    server = agenthost_factory(llm="sim://")
    for n in range(6):  # 12 messages: more than one page of 10
        request = urllib.request.Request(
            f"{server.url}/v1/sessions/play-pages/turns",
            data=json.dumps({"message": f"m{n}"}).encode(),
            headers={"content-type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10).close()
    page.goto(f"{server.url}/playground")
    page.get_by_label("Session id").fill("play-pages")
    page.get_by_role("button", name="Open").click()
    expect(page.locator("#messages li")).to_have_count(10)
    page.get_by_role("button", name="Older messages").click()
    expect(page.locator("#messages li")).to_have_count(12)
    expect(page.locator("#messages li").first).to_contain_text("m0")
    # An event type the page does not know (a tool call) is shown as it came.
    page.evaluate(
        "() => { const t = newTurn('x', 'turn-x'); document.getElementById('messages')"
        ".append(t.bubble); onEvent(t, 'tool', 5, {name: 'search'}, '{\"name\":\"search\"}'); }"
    )
    expect(page.locator("#messages li.event")).to_contain_text('tool event{"name":"search"}')
    page.get_by_role("button", name="Delete session").click()
    expect(page.locator("#status")).to_contain_text("Deleted session play-pages")
    with pytest.raises(urllib.error.HTTPError) as gone:  # the server agrees
        urllib.request.urlopen(f"{server.url}/v1/sessions/play-pages", timeout=10)
    assert gone.value.code == 404


def test_a_429_is_shown_plainly(
    page: Page, agenthost_factory: Callable[..., AgentHostProcess], screenshot_dir: Path
) -> None:
    server = agenthost_factory(llm="sim://", rate_limit_turns_per_minute=1)
    page.goto(f"{server.url}/playground")
    send(page, "first")
    wait_done(page)
    send(page, "second")
    alert = page.get_by_role("alert")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("429")
    expect(alert).to_contain_text("rate_limited")
    expect(alert).to_contain_text("retry after")
    expect(page.locator("#turn-status")).to_contain_text("refused (429)")
    page.screenshot(path=str(screenshot_dir / "playground-429.png"), full_page=True)


def test_the_websocket_transport_streams_the_same_turn(
    page: Page, agenthost_factory: Callable[..., AgentHostProcess]
) -> None:
    server = agenthost_factory(llm=PACED)
    page.goto(f"{server.url}/playground")
    page.get_by_label("WebSocket").check()
    page.get_by_label("Session id").fill("play-ws")
    page.evaluate(RECORD_GROWTH)
    send(page, "over a socket")
    wait_done(page)
    grown = [n for n in page.evaluate("() => window.__answerLengths") if n > 0]
    assert len(grown) >= 3
    assert last_answer(page).locator(".text").inner_text().startswith("sim: over a socket")
    # Resume from an event id: the events after it, from the stream the server keeps.
    page.get_by_label("Resume after event").fill("2")
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#status")).to_contain_text("Resumed after event 2")
    expect(page.locator("#events li").last).to_contain_text("done")


def test_accessible_and_usable_at_a_phones_width(
    browser: Browser, agenthost_factory: Callable[..., AgentHostProcess], screenshot_dir: Path
) -> None:
    server = agenthost_factory(llm=PACED)
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.goto(f"{server.url}/playground")
        assert_accessible(page)
        assert_fits_width(page)
        # Keyboard only: tab to the message box, type, Enter.
        page.get_by_label("Message", exact=True).focus()
        page.keyboard.type("from a phone")
        page.keyboard.press("Enter")
        wait_done(page)
        assert last_answer(page).locator(".text").inner_text().startswith("sim: from a phone")
        assert_fits_width(page)
        assert_accessible(page)
        page.screenshot(path=str(screenshot_dir / "playground-390px.png"), full_page=True)
        # Nothing but the server itself: no CDN, works offline.
        assert requested and all(url.startswith(server.url + "/") for url in requested)
    finally:
        context.close()


def test_the_playground_is_off_with_a_shared_store_unless_asked(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str
) -> None:
    off = agenthost_factory(store=redis_url)
    on = agenthost_factory(store=redis_url, playground="on")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{off.url}/playground", timeout=10)
    assert refused.value.code == 404
    with urllib.request.urlopen(f"{on.url}/playground", timeout=10) as resp:
        assert b"agenthost playground" in resp.read()


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Iterator[str]:
    directory = str(tmp_path / "cluster")
    yield directory
    if (Path(directory) / "cluster.json").exists():
        fleet.down(directory, log=lambda _: None)


def running_replica(directory: str) -> int | None:
    """The pid of the replica with a turn in flight, if exactly one has."""
    busy = []
    for replica in load(directory).replicas:
        with urllib.request.urlopen(f"http://127.0.0.1:{replica.port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("agenthost_inflight_turns ") and float(line.split()[1]) > 0:
                    busy.append(replica.pid)
    return busy[0] if len(busy) == 1 else None


@pytest.mark.slow
def test_a_server_killed_mid_stream_is_survived_by_resuming_on_the_other(
    page: Page, cluster_dir: str, screenshot_dir: Path
) -> None:
    port = free_port()
    fleet.up(cluster_dir, replicas=2, port=port, store=None,
             serve_env={"AGENTHOST_LLM": "sim://?ttft_ms=100&tokens_per_s=8&words=40",
                        "AGENTHOST_LEASE_TTL": "2"},
             drain_timeout=5, log=lambda _: None)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    page.goto(f"{base}/playground")
    page.get_by_label("Session id").fill("play-crash")
    send(page, "survive this")
    wait_until(lambda: int(last_answer(page).get_attribute("data-chunks") or 0) >= 3, 60,
               "the answer to start streaming")  # fmt: skip
    wait_until(lambda: running_replica(cluster_dir) is not None, 30,
               "the replica running the turn")  # fmt: skip
    pid = running_replica(cluster_dir)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_done(page)
    events = page.locator("#events").inner_text()
    # The page resumed after the last event it had; the other replica ran the turn again
    # (a `reset` dropped the partial text) and committed it once.
    assert "resume" in events and "Last-Event-ID" in events and "reset" in events
    answer = last_answer(page).locator(".text").inner_text()
    assert answer.startswith("sim: survive this")
    key = page.locator("#turn-key").inner_text()
    history = get_json(f"{base}/v1/sessions/play-crash/messages")["messages"]
    assert [(m["role"], m["turn_id"]) for m in history] == [("user", key), ("assistant", key)]
    assert history[1]["content"] == answer
    page.screenshot(path=str(screenshot_dir / "playground-resumed.png"), full_page=True)


def create_key(store: str, tenant: str, *limits: str) -> str:
    result = subprocess.run(
        [AGENTHOST, "keys", "create", "--tenant", tenant, "--store", store, *limits],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_an_api_key_typed_once_serves_sse_and_websocket_and_names_the_tenant(
    page: Page, agenthost_factory: Callable[..., AgentHostProcess], tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'keys.db'}"
    key = create_key(store, "acme", "--turns-per-minute", "2", "--burst", "2")
    server = agenthost_factory(store=store, auth="keys", llm=PACED, admin_token="adm",
                               heartbeat_interval=0.5)  # fmt: skip
    page.goto(f"{server.url}/playground")
    page.get_by_label("API key").fill("ahk_wrong")
    page.get_by_label("Session id").fill("play-keys")
    send(page, "who am i")
    expect(page.get_by_role("alert")).to_contain_text("401")
    page.get_by_label("API key").fill(key)
    page.reload()  # the key is kept in the tab's session storage
    assert page.get_by_label("API key").input_value() == key
    send(page, "over sse")
    wait_done(page)
    page.get_by_label("WebSocket").check()
    send(page, "over a socket")  # the key rides as a subprotocol
    wait_done(page)
    assert last_answer(page).locator(".text").inner_text().startswith("sim: over a socket")
    send(page, "one too many")
    expect(page.get_by_role("alert")).to_contain_text("rate_limited")
    # The dashboard names the tenant of each turn and of each refusal.
    page.goto(f"{server.url}/dashboard")
    page.get_by_label("Admin token").fill("adm")
    page.get_by_label("Admin token").press("Enter")
    expect(page.locator("#recent-turns tbody tr").first).to_contain_text("acme")
    expect(page.locator("#rejections tbody tr").first).to_contain_text("acme")


async def failing_agent(turn: Any) -> str:
    raise RuntimeError("the agent fell over")


def test_a_failed_turn_shows_its_error_event(
    page: Page, agenthost_factory: Callable[..., AgentHostProcess]
) -> None:
    server = agenthost_factory(app="tests.test_playground:failing_agent")
    page.goto(f"{server.url}/playground")
    send(page, "fail please")
    expect(page.get_by_role("alert")).to_contain_text("The turn failed — agent_error")
    expect(page.locator("#turn-status")).to_have_text("failed")
    expect(page.locator("#events li").last).to_contain_text("error")
