"""The load tester and its verifier: it must catch a broken server, retry politely with the
same Idempotency-Key, and report in the shapes it promises."""

from __future__ import annotations

import asyncio
import gc
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agenthost.loadtest import LoadConfig, run_load
from agenthost.loadtest.config import ClientKind
from agenthost.loadtest.processes import shares
from agenthost.loadtest.report import timeline
from agenthost.loadtest.verify import Acked, Verification, check_session
from tests.fixtures.agenthost import AgentHostProcess, wait_until
from tests.loadtest_servers import serving

AGENTHOST = str(Path(sys.executable).with_name("agenthost"))


@pytest.mark.parametrize(
    ("fault", "counter"),
    [("drop", "lost"), ("duplicate", "duplicated"), ("reorder", "out_of_order"),
     ("mismatch", "mismatched")],
)  # fmt: skip
@pytest.mark.parametrize("client", ["lean", "aiohttp"])
async def test_the_verifier_catches_a_broken_server(
    fault: str, counter: str, client: ClientKind
) -> None:
    with serving(fault) as (url, _):
        report = await run_load(LoadConfig(url=url, client=client, sessions=1, turns=6))
    assert report.verification is not None
    assert getattr(report.verification, counter) >= 1, report.verification
    assert not report.ok


@pytest.mark.parametrize("background", ["poll", "stream"])
@pytest.mark.parametrize(
    ("fault", "counter"),
    [("drop", "lost"), ("duplicate", "duplicated"), ("reorder", "out_of_order")],
)
async def test_the_verifier_catches_a_broken_server_with_background_turns(
    fault: str, counter: str, background: str
) -> None:
    # --background reads answers by polling or streaming, and verifies the same histories.
    with serving(fault) as (url, _):
        report = await run_load(LoadConfig(url=url, sessions=1, turns=6, background=background))
    assert report.verification is not None and report.answered == 6
    assert getattr(report.verification, counter) >= 1, report.verification
    assert not report.ok
    with serving() as (url, _):
        clean = await run_load(LoadConfig(url=url, sessions=3, turns=4, background=background))
    assert clean.ok and clean.answered == 12, clean.verification


@pytest.mark.parametrize("client", ["lean", "aiohttp"])
async def test_a_correct_server_passes_clean(client: ClientKind) -> None:
    with serving() as (url, stats):
        report = await run_load(LoadConfig(url=url, client=client, sessions=20, turns=4))
    assert report.ok and report.answered == 80 and report.failed == 0
    assert report.verification is not None and report.verification.acknowledged == 80
    assert stats["turns"] == 80


@pytest.mark.parametrize("client", ["lean", "aiohttp"])
async def test_503_is_retried_after_retry_after_with_the_same_key(client: ClientKind) -> None:
    with serving("flaky") as (url, stats):
        report = await run_load(LoadConfig(url=url, client=client, sessions=5, turns=2))
    assert report.ok and report.retries == 10
    assert report.retried_by_kind == {"unavailable": 10}
    assert set(stats["keys"].values()) == {2}  # every key sent exactly twice


def test_check_session_counts_each_kind_of_damage() -> None:
    acked = [Acked("t1", "a", "A"), Acked("t2", "b", "B"), Acked("t3", "c", "C")]

    def msg(role: str, content: str, tid: str) -> dict[str, str]:
        return {"role": role, "content": content, "turn_id": tid}

    history = [
        msg("user", "b", "t2"), msg("assistant", "B", "t2"),
        msg("user", "a", "t1"), msg("assistant", "wrong", "t1"),
        msg("user", "b", "t2"), msg("assistant", "B", "t2"),
        msg("user", "z", "t9"), msg("assistant", "Z", "t9"),
    ]  # fmt: skip
    v = Verification()
    check_session(acked, history, v)
    assert (v.lost, v.duplicated, v.out_of_order, v.mismatched, v.unacknowledged_present) == (
        1, 1, 1, 1, 1,
    )  # fmt: skip


def test_cli_against_the_real_server_writes_json_and_plot(
    agenthost_factory: Callable[..., AgentHostProcess], tmp_path: Path
) -> None:
    server = agenthost_factory(llm="sim://?latency_ms=50")
    out, png = tmp_path / "report.json", tmp_path / "plot.png"
    proc = subprocess.run(
        [AGENTHOST, "loadtest", "--url", server.url, "--sessions", "50", "--turns", "3",
         "--mode", "sse", "--quiet", "--json", str(out), "--plot", str(png),
         "--api-key", "secret-key"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["answered"] == 150 and report["failed"] == 0
    assert report["verification"]["lost"] == 0 and report["verification"]["acknowledged"] == 150
    assert report["latency_ms"]["p99"] >= report["latency_ms"]["p50"] > 0
    assert report["first_chunk_ms"] is not None
    assert report["config"]["api_key"] == "***"
    assert set(report) >= {
        "client_cpu_s",
        "client_cpu_pct",
        "saturated",
        "timeline",
        "client_loop_lag_ms",
        "client_gc_pauses",
        "client_gc_pause_max_ms",
    }
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_exits_1_when_the_server_loses_a_turn() -> None:
    with serving("drop") as (url, _):
        proc = subprocess.run(
            [AGENTHOST, "loadtest", "--url", url, "--sessions", "1", "--turns", "5", "--quiet"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 1
    assert "lost" in proc.stdout


def committed_turns(server: AgentHostProcess) -> float:
    """The server's `agenthost_turns_total`, summed over its labels."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as resp:
        lines = resp.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines
               if line.startswith("agenthost_turns_total{"))  # fmt: skip


def test_the_timeline_counts_turns_by_when_they_were_answered_and_leaves_gaps() -> None:
    # Two turns answered 0.05 s and 2.95 s into a 3 s run: 0.1 s slices (at most 30), the
    # first and the last with one turn each, the 28 between with none and no latency.
    points = timeline([(0.05, 10.0), (2.95, 30.0)], span_s=3.0)
    assert len(points) == 30 and {p.width_s for p in points} == {0.1}
    assert (points[0].turns, points[0].p50_ms, points[0].turns_per_s) == (1, 10.0, 10.0)
    assert (points[-1].turns, points[-1].p99_ms) == (1, 30.0)
    assert all(p.turns == 0 and p.p50_ms is None and p.p99_ms is None for p in points[1:-1])
    # A 10 minute run is cut into slices of 30 s or less, never thousands of points.
    long_run = timeline([(n * 0.5, 5.0) for n in range(1200)], span_s=600.0)
    assert len(long_run) <= 30 and sum(p.turns for p in long_run) == 1200
    assert timeline([], span_s=0.0) == []


def stopped_by_signal(
    server: AgentHostProcess, out: Path, sig: signal.Signals, answered: int, *args: str
) -> tuple[dict[str, Any], str]:
    """A long loadtest against `server` (with `args`), sent `sig` once `answered` turns are
    committed: its report, and what it printed."""
    proc = subprocess.Popen(
        [AGENTHOST, "loadtest", "--url", server.url, "--duration", "600", "--quiet",
         "--json", str(out), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: committed_turns(server) >= answered, 60, "turns to be answered")
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stdout + stderr
    report: dict[str, Any] = json.loads(out.read_text())
    assert report["stopped_early"] is True and report["failed"] == 0
    assert report["verification"]["acknowledged"] == report["answered"] >= answered
    damage = ("lost", "duplicated", "out_of_order", "mismatched", "unreadable")
    assert [report["verification"][k] for k in damage] == [0] * len(damage)
    return report, stdout + stderr


def test_a_signal_ends_the_run_early_and_what_was_sent_is_verified(
    agenthost_factory: Callable[..., AgentHostProcess], tmp_path: Path
) -> None:
    server = agenthost_factory(llm="sim://?latency_ms=200")
    report, printed = stopped_by_signal(
        server, tmp_path / "report.json", signal.SIGINT, 20, "--sessions", "10", "--mode", "sse"
    )
    assert report["wall_s"] < 60
    assert "stopped by a signal" in printed


async def test_the_report_carries_the_clients_own_loop_lag_and_gc_pauses(
    agenthost_factory: Callable[..., AgentHostProcess],
) -> None:
    """A busy or collecting client stamps every answer late; the report says by how much, so
    its lag is not read as the server's."""
    server = agenthost_factory(llm="sim://?latency_ms=700")
    ticks = 0

    def busy_tick() -> None:  # runs on the client's loop every 0.5 s
        nonlocal ticks
        ticks += 1
        if ticks == 1:
            gc.collect()
            end = time.monotonic() + 0.2
            while time.monotonic() < end:
                pass

    report = await run_load(LoadConfig(url=server.url, sessions=4, turns=2), on_tick=busy_tick)
    assert report.ok and ticks >= 1
    assert report.client_loop_lag_ms is not None and report.client_loop_lag_ms.max >= 150
    assert report.client_gc_pauses >= 1


def test_shares_deal_every_session_out_and_leave_no_process_empty() -> None:
    assert shares(10, 3) == [4, 3, 3]
    assert shares(2, 4) == [1, 1]
    assert sum(shares(10_001, 4)) == 10_001


def test_processes_spread_the_sessions_and_make_one_verified_report(
    agenthost_factory: Callable[..., AgentHostProcess], tmp_path: Path
) -> None:
    server = agenthost_factory(llm="sim://?latency_ms=20")
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [AGENTHOST, "loadtest", "--url", server.url, "--sessions", "30", "--turns", "3",
         "--processes", "3", "--mode", "sse", "--quiet", "--json", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["answered"] == 90 and report["sent"] == 90 and report["failed"] == 0
    verification = report["verification"]
    assert verification["sessions"] == 30 and verification["acknowledged"] == 90
    assert verification["lost"] == verification["duplicated"] == 0
    assert sum(point["turns"] for point in report["timeline"]) == 90
    assert report["latency_ms"]["p99"] >= report["latency_ms"]["p50"] > 0
    assert report["first_chunk_ms"] is not None and report["client_loop_lag_ms"] is not None
    # Each process's sessions are its own: 30 distinct sessions hold 3 turns each.
    assert committed_turns(server) == 90


def test_a_turn_lost_in_any_process_is_reported(tmp_path: Path) -> None:
    with serving("drop") as (url, _):
        proc = subprocess.run(
            [AGENTHOST, "loadtest", "--url", url, "--sessions", "4", "--turns", "5",
             "--processes", "2", "--quiet"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "lost" in proc.stdout


def test_sigterm_stops_every_process_early_and_all_is_verified(
    agenthost_factory: Callable[..., AgentHostProcess], tmp_path: Path
) -> None:
    server = agenthost_factory(llm="sim://?latency_ms=200")
    # To the parent alone: it passes it on to its client processes.
    stopped_by_signal(
        server, tmp_path / "report.json", signal.SIGTERM, 16, "--sessions", "8", "--processes", "2"
    )


async def test_sessions_not_yet_due_on_the_ramp_hold_no_task() -> None:
    # One starter sleeps for the ramp: 2,000 sessions over 3 s are not 2,000 live tasks
    # (each asleep on its own timer) for the client's garbage collector to walk.
    alive: list[int] = []
    with serving() as (url, stats):
        report = await run_load(
            LoadConfig(url=url, sessions=2000, turns=1, ramp=3.0, verify=False),
            on_tick=lambda: alive.append(len(asyncio.all_tasks())),
        )
    assert report.answered == 2000 and stats["turns"] == 2000
    assert alive and alive[0] < 1000, alive
