"""`agenthost cluster` on real parts: HAProxy, redis-server and agenthost processes.

Under continuous turns through HAProxy, a rolling replacement of every replica and a scale
down lose nothing and fail nothing: HAProxy stops routing to a draining replica, retries
its 503s elsewhere, and the replica's in-flight turns commit before it exits.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agenthost.cluster import fleet
from agenthost.cluster.autoscaler import parse_spec, read_metric, run_autoscaler
from agenthost.cluster.hpa import Autoscaler, Behavior, ScalingPolicy, ScalingRules
from agenthost.cluster.state import alive, load
from agenthost.loadtest import LoadConfig, run_load
from agenthost.loadtest.config import Mode
from agenthost.loadtest.runner import Progress
from agenthost.registry import create_registry
from tests.fixtures.agenthost import free_port
from tests.test_fleet import assert_history_is, messages_of

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Iterator[str]:
    directory = str(tmp_path / "cluster")
    yield directory
    if (Path(directory) / "cluster.json").exists():
        fleet.down(directory, log=lambda _: None)


class Load:
    """Sessions sending turns back to back through the balancer until stopped; a client
    that retries transient failures with the same Idempotency-Key."""

    def __init__(self, base: str, sessions: int) -> None:
        self.base = base
        self.acked: dict[str, dict[str, str]] = {f"load-{i}": {} for i in range(sessions)}
        self.failed: list[tuple[str, Any]] = []
        self.latencies: list[float] = []
        self.stop = False

    async def session(self, http: aiohttp.ClientSession, sid: str) -> None:
        n = 0
        deadline = time.monotonic() + 120  # bounded whatever happens
        while not self.stop and time.monotonic() < deadline:
            tid = f"{sid}-{n}"
            started = time.monotonic()
            for _attempt in range(20):
                try:
                    async with http.post(
                        f"{self.base}/v1/sessions/{sid}/turns",
                        json={"message": f"turn {n} of {sid}"},
                        headers={"Idempotency-Key": tid},
                    ) as resp:
                        body = await resp.json(content_type=None)
                        if resp.status == 200:
                            self.acked[sid][tid] = body["response"]
                            break
                        if resp.status not in (409, 503):
                            self.failed.append((tid, body))
                            break
                        await asyncio.sleep(float(resp.headers.get("Retry-After", "1")) / 10)
                except (TimeoutError, aiohttp.ClientError):
                    await asyncio.sleep(0.05)
            else:
                self.failed.append((tid, "retries exhausted"))
            self.latencies.append(time.monotonic() - started)
            n += 1

    def answered(self) -> int:
        return sum(len(turns) for turns in self.acked.values())


async def run_with_load(directory: str, port: int, action: Any, sessions: int = 100) -> Load:
    load_ = Load(f"http://127.0.0.1:{port}", sessions)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=500)) as http:
        tasks = [asyncio.create_task(load_.session(http, sid)) for sid in load_.acked]
        deadline = time.monotonic() + 20
        while load_.answered() < 2 * sessions:
            assert time.monotonic() < deadline, "the load never got going"
            await asyncio.sleep(0.05)
        before = load_.answered()
        await asyncio.to_thread(action)
        after_deadline = time.monotonic() + 20
        while load_.answered() < before + 2 * sessions:  # still serving after the action
            assert time.monotonic() < after_deadline, "service did not continue"
            await asyncio.sleep(0.05)
        load_.stop = True
        await asyncio.gather(*tasks)
        for sid, turns in load_.acked.items():
            assert_history_is(await messages_of(http, load_.base, sid), turns)
    return load_


async def test_scale_up_and_down_under_load_fails_nothing(cluster_dir: str) -> None:
    port = free_port()
    fleet.up(cluster_dir, replicas=1, port=port, store=None,
             serve_env={"AGENTHOST_LLM": "sim://?latency_ms=100"}, drain_timeout=20,
             log=lambda _: None)  # fmt: skip

    def up_then_down() -> None:
        fleet.scale(cluster_dir, 4, log=lambda _: None)
        assert len(load(cluster_dir).replicas) == 4
        fleet.scale(cluster_dir, 1, log=lambda _: None)

    result = await run_with_load(cluster_dir, port, up_then_down)
    assert result.failed == []
    assert len(load(cluster_dir).replicas) == 1


async def test_workers_scaled_up_and_down_and_rolled_out_under_load_fail_nothing(
    cluster_dir: str,
) -> None:
    port = free_port()
    fleet.up(cluster_dir, replicas=1, workers=1, port=port, store=None,
             serve_env={"AGENTHOST_LLM": "sim://?latency_ms=100"}, drain_timeout=20,
             log=lambda _: None)  # fmt: skip
    first = load(cluster_dir).workers[0].pid
    _, rows = fleet.status(cluster_dir)
    assert [(row.lb_status, row.ready) for row in rows] == [("UP", True), ("worker", True)]

    def workers_up_then_down() -> None:
        fleet.scale_workers(cluster_dir, 3, log=lambda _: None)
        assert len(load(cluster_dir).workers) == 3
        # The first worker drains too: every turn it ran is finished or handed back.
        state = load(cluster_dir)
        for worker in sorted(state.workers, key=lambda w: w.pid != first)[:2]:
            fleet._drain_worker(state, worker, lambda _: None)
        # Then a rollout replaces the replica and the last worker, under the same load.
        before = load(cluster_dir)
        replaced.extend([before.replicas[0].pid, before.workers[0].pid])
        fleet.rollout(cluster_dir, log=lambda _: None)

    replaced: list[int] = []
    result = await run_with_load(cluster_dir, port, workers_up_then_down, sessions=40)
    assert result.failed == []
    state = load(cluster_dir)
    assert len(state.workers) == 1 and not alive(first)
    assert len(state.replicas) == 1 and all(r.pid for r in state.replicas)
    now = [state.replicas[0].pid, state.workers[0].pid]
    assert not set(now) & set(replaced) and not any(alive(pid) for pid in replaced)


async def test_the_autoscaler_reads_each_replicas_metric(cluster_dir: str) -> None:
    port = free_port()
    state = fleet.up(cluster_dir, replicas=2, port=port, store=None,
                     serve_env={"AGENTHOST_LLM": "sim://?latency_ms=3000"}, drain_timeout=5,
                     log=lambda _: None)  # fmt: skip
    low, high, target = parse_spec("min=1,max=8,target=10")
    scaler = Autoscaler(min_replicas=low, max_replicas=high, target=target)
    async with aiohttp.ClientSession() as http:
        # 40 slow turns in flight through the balancer: about 20 per replica.
        turns = [
            asyncio.create_task(
                http.post(
                    f"http://127.0.0.1:{port}/v1/sessions/as-{i}/turns", json={"message": "m"}
                )
            )
            for i in range(40)
        ]
        deadline = time.monotonic() + 10
        while True:
            values = {
                f"r{r.slot}": read_metric(r.port, "agenthost_inflight_turns")
                for r in state.replicas
            }
            if sum(v or 0 for v in values.values()) >= 40:
                break
            assert time.monotonic() < deadline, values
            await asyncio.sleep(0.05)
        decision = scaler.decide(0.0, 2, values)
        assert decision.average == 20 and decision.metric_replicas == 4
        assert decision.desired == 4 and decision.reason == "scale up"
        for task in turns:
            (await task).release()
    with pytest.raises(ValueError):
        parse_spec("min=3,max=2,target=1")


async def test_a_rollout_under_load_of_every_kind_fails_and_loses_nothing(cluster_dir: str) -> None:
    # One fleet, one rollout, a load of each kind (plain HTTP, SSE, WebSocket) at once; the
    # load tests' verifiers read every session's history back.
    port = free_port()
    fleet.up(cluster_dir, replicas=3, port=port, store=None,
             serve_env={"AGENTHOST_LLM": "sim://?ttft_ms=50&tokens_per_s=100&words=10"},
             drain_timeout=20, log=lambda _: None)  # fmt: skip
    modes: tuple[Mode, ...] = ("http", "sse", "ws")
    progress = {mode: Progress() for mode in modes}
    loads = {
        mode: asyncio.create_task(
            run_load(
                LoadConfig(
                    url=f"http://127.0.0.1:{port}",
                    mode=mode,
                    sessions=50,
                    duration=14.0,
                    think=0.3,
                    ramp=1.0,
                ),
                progress[mode],
            )
        )
        for mode in modes
    }
    deadline = time.monotonic() + 20
    # Every kind of load is flowing before the fleet is replaced.
    while min(p.answered for p in progress.values()) < 100:
        assert time.monotonic() < deadline, "the load never got going"
        await asyncio.sleep(0.05)
    old_pids = {r.pid for r in load(cluster_dir).replicas}
    await asyncio.to_thread(fleet.rollout, cluster_dir, log=lambda _: None)
    state = load(cluster_dir)
    assert len(state.replicas) == 3
    assert not {r.pid for r in state.replicas} & old_pids
    assert not any(alive(pid) for pid in old_pids)
    rolled_out = {mode: p.answered for mode, p in progress.items()}
    for mode, load_task in loads.items():
        report = await load_task
        assert report.answered > rolled_out[mode], f"{mode}: no service after the rollout"
        assert report.failed == 0, (mode, report.failed_by_kind)
        assert report.verification is not None and report.verification.clean, (
            mode,
            report.verification,
        )
        assert report.answered > 170, mode


async def test_the_autoscaler_follows_load_up_and_back_down(cluster_dir: str) -> None:
    port = free_port()
    fleet.up(cluster_dir, replicas=1, port=port, store=None,
             serve_env={"AGENTHOST_LLM": "sim://?latency_ms=1000"}, drain_timeout=10,
             log=lambda _: None)  # fmt: skip
    quick = Behavior(
        ScalingRules(0, (ScalingPolicy("Pods", 3, 1),)),
        ScalingRules(2, (ScalingPolicy("Pods", 3, 1),)),
    )
    decisions: list[dict[str, Any]] = []
    stop = threading.Event()

    def log(line: str) -> None:
        if line.startswith("{"):
            decisions.append(json.loads(line))

    scaler = threading.Thread(
        target=run_autoscaler,
        args=(cluster_dir, "min=1,max=4,target=10"),
        kwargs={"metric": "agenthost_inflight_turns", "period": 0.5, "log": log,
                "should_stop": stop.is_set, "behavior": quick},
    )  # fmt: skip
    scaler.start()
    try:
        # 40 sessions of back-to-back 1 s turns: 40 in flight, 4 replicas at target 10.
        config = LoadConfig(url=f"http://127.0.0.1:{port}", sessions=40, duration=8.0)
        report = await run_load(config)
        peak = max(d["desired"] for d in decisions)
        deadline = time.monotonic() + 30
        while len(load(cluster_dir).replicas) > 1:
            assert time.monotonic() < deadline, "the fleet did not scale back down"
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.to_thread(scaler.join, 30)
    assert peak == 4
    assert report.failed == 0 and report.verification is not None
    assert report.verification.clean
    ups = [d for d in decisions if d["autoscale"] == "scale up"]
    downs = [d for d in decisions if d["autoscale"] == "scale down"]
    assert ups and downs
    assert all({"values", "average", "target", "current"} <= set(d) for d in decisions)
    # The same decisions, with their inputs, are in the fleet's registry: /dashboard shows them.
    registry = create_registry(load(cluster_dir).store)
    await registry.open()
    try:
        recorded = await registry.decisions(100)
    finally:
        await registry.close()
    assert {"scale up", "scale down"} <= {d.reason for d in recorded}
    assert all({"values", "average", "target"} <= set(d.inputs) for d in recorded)
