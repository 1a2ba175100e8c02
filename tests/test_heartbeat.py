"""The heartbeat and what it reports: p99 from the interval's own turns, turns/s, recent
turns and per-tenant refusals (bounded), the draining state written as a drain starts, and a
last `stopped` record when the process stops."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from collections.abc import Callable
from typing import Any

from agenthost.observability.activity import ANONYMOUS, MAX_DURATIONS, MAX_TENANTS, Activity
from agenthost.observability.metrics import Metrics
from agenthost.registry.memory import MemoryRegistry
from agenthost.runtime.heartbeat import Heartbeat, p99
from tests.fixtures.agenthost import AgentHostProcess, async_wait_until, wait_until

TOKEN = "heartbeat-admin"


def test_p99_is_the_nearest_rank_of_the_intervals_turns() -> None:
    assert p99([]) is None
    assert p99([0.5]) == 0.5
    assert p99([float(n) for n in range(1, 101)]) == 99.0
    assert p99([1.0] * 98 + [7.0, 9.0]) == 7.0


def test_activity_is_bounded() -> None:
    activity = Activity(keep=3)
    for n in range(5):
        activity.turn_finished("completed", 0.1, tenant=None, session_id="s", turn_id=f"t{n}",
                               message="hi", response="there")  # fmt: skip
    assert [t.turn_id for t in activity.recent_turns()] == ["t2", "t3", "t4"]
    assert all(t.tenant == ANONYMOUS and t.message is None for t in activity.recent_turns())
    for n in range(MAX_TENANTS + 10):
        activity.rate_limited(f"tenant-{n}")
    assert len(activity.rejections) == MAX_TENANTS + 1
    assert activity.rejections["(others)"] == 10
    for _ in range(MAX_DURATIONS * 3):
        activity.turn_finished("completed", 1.0, tenant="a", session_id="s", turn_id="t")
    kept = activity.take_durations()
    assert MAX_DURATIONS // 2 <= len(kept) < MAX_DURATIONS
    assert activity.take_durations() == []


def test_content_is_kept_only_with_log_content() -> None:
    activity = Activity(log_content=True)
    activity.turn_finished("completed", 0.1, tenant="acme", session_id="s", turn_id="t",
                           message="hi", response="there")  # fmt: skip
    [turn] = activity.recent_turns()
    assert (turn.tenant, turn.message, turn.response) == ("acme", "hi", "there")


async def test_a_record_reports_the_interval_and_a_stop_says_so() -> None:
    metrics = Metrics()
    registry = MemoryRegistry()
    beat = Heartbeat(registry, metrics, address="http://a:1", version="v", role="all",
                     interval=60)  # fmt: skip
    for seconds in (0.2, 0.4, 3.0):
        metrics.turn_finished("completed", seconds)
        metrics.activity.turn_finished("completed", seconds, tenant="acme", session_id="s",
                                       turn_id="t")  # fmt: skip
    record = beat.record()
    assert record.turns_total == 3 and record.turns_per_s > 0
    assert record.p99_s == 3.0 and record.state == "ready"
    assert len(record.recent_turns) == 3 and record.history[-1].p99_s == 3.0
    quiet = beat.record()
    assert quiet.turns_per_s == 0 and quiet.p99_s is None and len(quiet.history) == 2
    beat.start()
    await beat.stop()
    [last] = await registry.processes()
    assert last.state == "stopped"


def fleet(url: str) -> dict[str, Any]:
    request = urllib.request.Request(f"{url}/admin/fleet")
    request.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(request, timeout=10) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


def test_a_draining_process_says_so_at_once_and_stopped_when_gone(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str
) -> None:
    # A long heartbeat interval: only the drain's own beat can show `draining` in time.
    common = {"store": redis_url, "admin_token": TOKEN, "drain_timeout": 60}
    slow = agenthost_factory(llm="sim://?latency_ms=4000", heartbeat_interval=60, **common)
    watcher = agenthost_factory(heartbeat_interval=0.5, **common)
    turn = threading.Thread(
        target=lambda: urllib.request.urlopen(
            urllib.request.Request(
                f"{slow.url}/v1/sessions/hb-drain/turns",
                data=b'{"message": "slow"}',
                headers={"content-type": "application/json"},
            ),
            timeout=60,
        ).close()
    )
    turn.start()

    def state() -> str | None:
        for p in fleet(watcher.url)["processes"]:
            if p["address"] == slow.url:
                return str(p["state"])
        return None

    wait_until(lambda: state() == "ready", 30, "the slow process to be listed")
    wait_until(lambda: b"agenthost_inflight_turns 1" in urllib.request.urlopen(
        f"{slow.url}/metrics", timeout=10).read(), 30, "the turn to run")  # fmt: skip
    drain = urllib.request.Request(f"{slow.url}/admin/drain", method="POST")
    drain.add_header("Authorization", f"Bearer {TOKEN}")
    urllib.request.urlopen(drain, timeout=10).close()
    wait_until(lambda: state() == "draining", 10, "the record to say draining")
    turn.join(60)
    wait_until(lambda: state() == "stopped", 60, "the record to say stopped")


async def test_an_unreachable_registry_is_logged_once_and_never_stops_the_beat(
    caplog: Any,
) -> None:
    from agenthost.registry import ProcessRecord
    from agenthost.registry.redis import RedisRegistry
    from tests.fixtures.agenthost import free_port

    class Counted(RedisRegistry):
        calls = 0

        async def beat(self, record: ProcessRecord, ttl_s: float) -> None:
            self.calls += 1
            await super().beat(record, ttl_s)

    # A Redis that is not there: every beat fails, and the process carries on.
    registry = Counted(f"redis://127.0.0.1:{free_port()}/0?connect_timeout=0.2")
    await registry.open()
    beat = Heartbeat(registry, Metrics(), address="http://a:1", version="v", role="all",
                     interval=0.2)  # fmt: skip
    try:
        with caplog.at_level("WARNING", logger="agenthost.heartbeat"):
            beat.start()
            await async_wait_until(lambda: registry.calls >= 4, 30, "four failed beats")
    finally:
        await beat.stop()
        await registry.close()
    assert len([r for r in caplog.records if "unreachable" in r.message]) == 1


async def test_a_stop_that_meets_a_wake_ends_every_time() -> None:
    """A drain wakes the beat (beat_soon) while the process stops: the stop must end. On
    Python 3.11 a beat waiting in asyncio.wait_for lost the cancellation in this race now
    and then, and the app's shutdown waited for ever."""
    registry = MemoryRegistry()
    for _ in range(300):
        beat = Heartbeat(registry, Metrics(), address="http://a:1", version="v", role="all",
                         interval=60)  # fmt: skip
        beat.start()
        for _ in range(3):  # let the first write finish and the wait begin
            await asyncio.sleep(0)
        beat.beat_soon()
        await asyncio.sleep(0)
        async with asyncio.timeout(5):
            await beat.stop()
