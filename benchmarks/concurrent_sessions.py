"""Concurrent sessions against one server process with a slow LLM: how much latency does
the server add on top of the model's, and is every turn kept?

Starts `agenthost serve` on the embedded default (SQLite, `--llm sim://?latency_ms=2000`),
then runs `agenthost loadtest` from a separate process: N sessions x T turns, every history
read back and verified. With `--workers N` (above 1) the server is `agenthost serve
--workers N` on a throw-away redis-server (the processes need a store they share). The
server's CPU over the run (its whole process tree) is reported as a share of the cores it
may use, so headroom shows. What the p99 may wait on is measured, not guessed: the server's
event-loop lag and garbage-collection pauses (its /metrics, summed over its processes) and the
load client's own loop lag and collections (its report). With `--workers`, `per_process`
gives each process's turns, CPU (as a share of one core) and loop lag over the run, from
/metrics scraped before and after it, so an uneven spread of connections shows. Prints one
JSON object (also to `--json FILE`).

    python benchmarks/concurrent_sessions.py --sessions 2000 --turns 3
    python benchmarks/concurrent_sessions.py --sessions 10000 --turns 3 --workers 2 \
        --client-processes 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from turn_cpu import (  # shared with the CPU benchmark
    cpu_seconds,
    free_port,
    redis_server,
    result_header,
)

ROOT = Path(__file__).resolve().parent.parent
AGENTHOST = str(Path(sys.executable).with_name("agenthost"))


def wait_ready(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready")


_SAMPLE = re.compile(r"^(agenthost_[a-z_]+)(?:\{([^}]*)\})? ([0-9.e+-]+)$")


def histogram(text: str, name: str, label: str = "") -> dict[str, dict[str, float]]:
    """`name`'s buckets (by upper bound), _sum and _count in Prometheus text, summed over
    processes; keyed by the value of `label` ("" when it has none)."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None or not m.group(1).startswith(name):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        key = labels.get(label, "") if label else ""
        suffix = m.group(1)[len(name) :]
        field = labels.get("le", "") if suffix == "_bucket" else suffix
        series = out.setdefault(key, {})
        series[field] = series.get(field, 0.0) + float(m.group(3))
    return out


def bucket_quantile(series: dict[str, float], q: float) -> float | None:
    """The upper bound of the bucket holding quantile `q` (a histogram says no more)."""
    count = series.get("_count", 0.0)
    if not count:
        return None
    bounds = sorted((float(k), v) for k, v in series.items() if k and not k.startswith("_"))
    for bound, cumulative in bounds:
        if cumulative >= q * count:
            return bound
    return float("inf")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def scrape(url: str) -> str:
    """The server's /metrics (every process's, under a `process` label, with --workers)."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""


def per_process(text: str) -> dict[str, dict[str, float]]:
    """By the `process` label (with --workers): turns finished and CPU seconds, so an uneven
    spread of connections over the processes shows (difference two scrapes for a run)."""
    out: dict[str, dict[str, float]] = {}
    for key, name in (
        ("turns", "agenthost_turns_total"),
        ("cpu_s", "agenthost_process_cpu_seconds_total"),
    ):
        for process, series in histogram(text, name, "process").items():
            out.setdefault(process, {})[key] = series.get("", 0.0)
    return out


def spread(before: str, after: str, wall: float) -> dict[str, Any]:
    """Each process's share of the run's turns, its CPU as a share of one core, and the
    p99 of its event loop's lag (over its life) — with one process, {}."""
    start, end = per_process(before), per_process(after)
    lags = histogram(after, "agenthost_event_loop_lag_seconds", "process")
    if set(end) <= {""}:
        return {}
    rows = {}
    for process in sorted(end):
        e, b = end[process], start.get(process, {})
        rows[process] = {
            "turns": int(e.get("turns", 0) - b.get("turns", 0)),
            "cpu_pct_of_core": round(
                100 * (e.get("cpu_s", 0) - b.get("cpu_s", 0)) / max(wall, 1e-9), 1
            ),
            "loop_lag_p99_ms_at_most": _ms(bucket_quantile(lags.get(process, {}), 0.99)),
        }
    return {"per_process": rows}


def server_waits(text: str) -> dict[str, Any]:
    """The server's event-loop lag and GC pauses over its life (the load is most of it)."""
    if not text:
        return {}
    lag = histogram(text, "agenthost_event_loop_lag_seconds").get("")
    pauses = histogram(text, "agenthost_gc_pause_seconds", "generation")
    if lag is None:
        return {}  # a server without these metrics
    p99, p999 = bucket_quantile(lag, 0.99), bucket_quantile(lag, 0.999)
    return {
        "server_loop_lag_probes": int(lag.get("_count", 0)),
        # Upper bounds of the buckets: the lag of the 99th / 99.9th percentile probe was
        # at most this.
        "server_loop_lag_p99_ms_at_most": _ms(p99),
        "server_loop_lag_p999_ms_at_most": _ms(p999),
        "server_loop_lag_mean_ms": round(1000 * lag["_sum"] / max(lag["_count"], 1), 2),
        "server_gc": {
            generation: {
                "collections": int(series.get("_count", 0)),
                "total_ms": round(1000 * series.get("_sum", 0.0), 1),
                "p99_ms_at_most": _ms(bucket_quantile(series, 0.99)),
            }
            for generation, series in sorted(pauses.items())
        },
    }


def measure(
    sessions: int,
    turns: int,
    latency_ms: int,
    ramp: float,
    tmp: Path,
    workers: int = 1,
    client_processes: int = 1,
    client: str = "lean",
) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHOST_")}
    with contextlib.ExitStack() as stack:
        store = f"sqlite:///{tmp / 's.db'}"
        extra: list[str] = []
        if workers > 1:
            store, _ = stack.enter_context(redis_server(tmp))
            extra = ["--workers", str(workers), "--allow-no-auth"]
        server = subprocess.Popen(
            [AGENTHOST, "serve", "--port", str(port), "--store", store,
             "--llm", f"sim://?latency_ms={latency_ms}", "--log-level", "warning", *extra],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_ready(url)
            out = tmp / f"load-{sessions}.json"
            metrics_before = scrape(url)
            cpu_before, started = cpu_seconds(server.pid), time.monotonic()
            subprocess.run(
                [AGENTHOST, "loadtest", "--url", url, "--sessions", str(sessions), "--turns",
                 str(turns), "--ramp", str(ramp), "--processes", str(client_processes),
                 "--client", client,
                 "--quiet", "--json", str(out)],
                check=False, stdout=subprocess.DEVNULL, timeout=900,
            )  # fmt: skip
            server_cpu = cpu_seconds(server.pid) - cpu_before
            wall = time.monotonic() - started
            metrics_after = scrape(url)
            waits = {**server_waits(metrics_after), **spread(metrics_before, metrics_after, wall)}
            report = json.loads(out.read_text())
        finally:
            server.terminate()
            server.wait(60)
    v = report["verification"] or {}
    lat = report["latency_ms"] or {}
    return {
        "sessions": sessions,
        "workers": workers,
        "client_processes": client_processes,
        "client": client,
        "store": store.split("://")[0],
        # The server's CPU over the load test, as a share of the cores its processes may use.
        "server_cpu_pct_of_cores": round(100 * server_cpu / max(wall * workers, 1e-9), 1),
        # CPU per answered turn: unlike latency, barely moved by other load on the machine.
        "server_cpu_ms_per_turn": round(1000 * server_cpu / max(report["answered"], 1), 4),
        "client_cpu_ms_per_turn": round(
            1000 * report["client_cpu_s"] / max(report["answered"], 1), 4
        ),
        "turns_per_session": turns,
        "llm_latency_ms": latency_ms,
        "answered": report["answered"],
        "failed": report["failed"],
        "failed_by_kind": report.get("failed_by_kind"),
        "lost": v.get("lost"),
        "duplicated": v.get("duplicated"),
        "out_of_order": v.get("out_of_order"),
        "mismatched": v.get("mismatched"),
        "p50_ms": lat.get("p50"),
        "p99_ms": lat.get("p99"),
        "p99_added_ms": round(lat["p99"] - latency_ms, 1) if lat else None,
        "ramp_s": ramp,
        "turns_per_s": report["turns_per_s"],
        "client_cpu_pct": report["client_cpu_pct"],
        "client_saturated": report["saturated"],
        "client_loop_lag_ms": report.get("client_loop_lag_ms"),
        "client_gc_pauses": report.get("client_gc_pauses"),
        "client_gc_pause_max_ms": report.get("client_gc_pause_max_ms"),
        "client_gc_pause_ms_by_generation": report.get("client_gc_pause_ms_by_generation"),
        **waits,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", default="2000", help="comma-separated session counts")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--llm-latency-ms", type=int, default=2000)
    parser.add_argument(
        "--ramp",
        type=float,
        default=2.0,
        help="seconds over which sessions start (default: one LLM latency, so arrivals are "
        "spread as real users' are rather than all at one instant)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="server processes (above 1: on a redis-server)"
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        default=1,
        help="agenthost loadtest --processes: client processes the sessions are spread over",
    )
    parser.add_argument(
        "--client",
        choices=["lean", "aiohttp"],
        default="lean",
        help="agenthost loadtest --client: its own keep-alive HTTP client, or aiohttp",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    rows = []
    for count in [int(s) for s in args.sessions.split(",")]:
        with tempfile.TemporaryDirectory(prefix="bench-sessions-") as tmp:
            rows.append(
                measure(
                    count,
                    args.turns,
                    args.llm_latency_ms,
                    args.ramp,
                    Path(tmp),
                    args.workers,
                    args.client_processes,
                    args.client,
                )
            )
        print(json.dumps(rows[-1]), file=sys.stderr)
    result = {
        **result_header("concurrent_sessions"),
        "results": rows,
    }
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
