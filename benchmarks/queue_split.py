"""What the api / worker split costs against `--role all`, on one Redis, in the same run.

For each layout — `all` (one process that takes and runs turns) and `split` (one
`--role api` process and one `--role worker`) — it starts the processes on a throw-away
redis-server and measures:

- CPU per turn: `--turns` plain turns (`--concurrency` sessions, each sending its turns one
  after another) on the instant simulator; the CPU of every agenthost process and of
  redis-server over the batch, divided by the turns answered (median of `--repeats` rounds,
  the layouts taking turns round by round). `cpu_ratio` is split over all (the issue's
  target: at most 1.3).
- Where it goes: the same batch's CPU per turn of each process (`cpu_ms_by_process`: each
  role and redis-server) and the Redis commands per turn (`redis_commands_per_turn`, from
  `INFO commandstats` before and after: commands run inside a Lua script count too, each
  script also as one `evalsha`).
- Latency through the queue: `--latency-turns` plain turns at a `--llm-latency-ms` LLM (2 s
  by default, `--latency-concurrency` sessions, each sending its turns one after another);
  p50 and p99 of the answer's wall time. The sessions start evenly spread over
  `--latency-ramp-s` (by default one LLM call): turns then arrive at a steady rate
  (sessions / LLM latency: 250 a second), as from clients that come and go, and
  `added_p99_ms`, split's p99 minus all's, is what the queue adds to a turn (target: at most
  20 ms). The same turns are also sent with every session starting at once (`burst_*`):
  500 connections and first turns in the same instant, then waves of 500 answers ending
  together, since every turn takes the same 2 s. Measured, that burst and not the queue is
  the p99 of both layouts: `all`'s first wave alone had p50 2,816 ms and p99 2,869 ms (its
  later waves p99 2,245 to 2,652 ms), split's 2,863 / 2,880 ms; the single Python client
  spends about 200 ms just sending the first 500 requests.

Prints one JSON object (also written to `--json FILE`). The servers run the code on
`PYTHONPATH` if it is set (`PYTHONPATH=../other/src` measures another checkout). Run on a
quiet machine:

    python benchmarks/queue_split.py --turns 3000 --repeats 3 --latency-turns 2000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from turn_cpu import (
    AGENTHOST,
    cpu_seconds,
    free_port,
    process,
    redis_server,
    result_header,
    wait_http,
)

TARGET_CPU_RATIO = 1.3
TARGET_ADDED_P99_MS = 20.0

LAYOUTS = {"all": ("all",), "split": ("api", "worker")}


def command_calls(store: str) -> dict[str, int]:
    """Commands redis-server ran so far, by name (`INFO commandstats`)."""
    port = store.rsplit(":", 1)[1].split("/", 1)[0]
    info = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", port, "INFO", "commandstats"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    calls: dict[str, int] = {}
    for line in info.splitlines():
        if line.startswith("cmdstat_"):
            name, _, stats = line.partition(":")
            fields = dict(kv.split("=", 1) for kv in stats.split(","))
            calls[name.removeprefix("cmdstat_")] = int(fields["calls"])
    return calls


@contextlib.contextmanager
def layout(
    name: str, store: str, llm: str, workdir: Path, concurrency: int
) -> Iterator[tuple[str, dict[str, int]]]:
    """The layout's processes, ready: (the URL clients use, each role's pid)."""
    with contextlib.ExitStack() as stack:
        pids: dict[str, int] = {}
        base = ""
        for role in LAYOUTS[name]:
            port = free_port()
            log = workdir / f"{name}-{role}-{port}.log"
            env = {
                "AGENTHOST_PORT": str(port),
                "AGENTHOST_STORE": store,
                "AGENTHOST_LLM": llm,
                "AGENTHOST_ROLE": role,
                "AGENTHOST_ALLOW_NO_AUTH": "true",
                "AGENTHOST_WORKER_CONCURRENCY": str(concurrency),
                "AGENTHOST_MAX_QUEUED_TURNS": "0",
                "AGENTHOST_ACCESS_LOG": "false",
                "AGENTHOST_LOG_LEVEL": "warning",
                "PATH": "/usr/bin:/bin",
            }
            if "PYTHONPATH" in os.environ:  # another checkout's code (an A/B run)
                env["PYTHONPATH"] = os.environ["PYTHONPATH"]
            proc = stack.enter_context(process([AGENTHOST, "serve"], log, env))
            wait_http(f"http://127.0.0.1:{port}/readyz", proc, log)
            pids[role] = proc.pid
            if role != "worker":
                base = f"http://127.0.0.1:{port}"
        yield base, pids


async def batch(
    base: str, turns: int, concurrency: int, ramp_s: float = 0.0
) -> tuple[list[float], int]:
    """`turns` plain turns, the sessions starting evenly over `ramp_s` seconds; (each
    answered turn's seconds, errors)."""
    latencies: list[float] = []
    errors = 0
    per_session = max(1, turns // concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def session(n: int) -> None:
            nonlocal errors
            if ramp_s > 0:
                await asyncio.sleep(ramp_s * n / concurrency)
            sid = f"q-{uuid.uuid4().hex[:12]}"
            for n in range(per_session):
                started = time.monotonic()
                async with http.post(
                    f"{base}/v1/sessions/{sid}/turns", json={"message": f"m{n}"}
                ) as resp:
                    await resp.read()
                    if resp.status == 200:
                        latencies.append(time.monotonic() - started)
                    else:
                        errors += 1

        await asyncio.gather(*(session(n) for n in range(concurrency)))
    return latencies, errors


def _median_of(rounds: list[dict[str, float]], digits: int) -> dict[str, float]:
    """Each key's median over the rounds (0 in a round that lacks it)."""
    keys = sorted({key for r in rounds for key in r})
    return {k: round(statistics.median(r.get(k, 0.0) for r in rounds), digits) for k in keys}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=3000, help="turns per layout per round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-turns", type=int, default=2000)
    parser.add_argument("--latency-concurrency", type=int, default=500)
    parser.add_argument("--llm-latency-ms", type=float, default=2000.0)
    parser.add_argument(
        "--latency-ramp-s",
        type=float,
        help="the latency sessions start evenly over this many seconds (default: one LLM call)",
    )
    parser.add_argument("--worker-concurrency", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    cpu: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    # Per round: each process's CPU per turn, and the Redis commands per turn.
    by_process: dict[str, list[dict[str, float]]] = {name: [] for name in LAYOUTS}
    commands: dict[str, list[dict[str, float]]] = {name: [] for name in LAYOUTS}
    latency: dict[str, dict[str, float]] = {name: {} for name in LAYOUTS}
    ramp_s = args.llm_latency_ms / 1000 if args.latency_ramp_s is None else args.latency_ramp_s
    errors = dict.fromkeys(LAYOUTS, 0)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for _ in range(args.repeats):
            for name in LAYOUTS:
                with (
                    redis_server(workdir) as (store, redis_pids),
                    layout(name, store, "sim://", workdir, args.worker_concurrency) as (base, pids),
                ):
                    asyncio.run(batch(base, args.concurrency * 2, args.concurrency))  # warm
                    every = {**pids, "redis-server": redis_pids[0]}
                    calls_before = command_calls(store)
                    before = {role: cpu_seconds(pid) for role, pid in every.items()}
                    answered, failed = asyncio.run(batch(base, args.turns, args.concurrency))
                    used = {role: cpu_seconds(pid) - before[role] for role, pid in every.items()}
                    calls_after = command_calls(store)
                    errors[name] += failed
                    n = max(len(answered), 1)
                    cpu[name].append(sum(used.values()) * 1000 / n)
                    by_process[name].append({role: s * 1000 / n for role, s in used.items()})
                    commands[name].append(
                        {
                            cmd: (calls - calls_before.get(cmd, 0)) / n
                            for cmd, calls in calls_after.items()
                            if calls > calls_before.get(cmd, 0) and cmd != "info"
                        }
                    )
        llm = f"sim://?latency_ms={args.llm_latency_ms:g}"
        for prefix, ramp in (("", ramp_s), ("burst_", 0.0)):
            for name in LAYOUTS:
                with (
                    redis_server(workdir) as (store, _),
                    layout(name, store, llm, workdir, args.worker_concurrency) as (base, _),
                ):
                    seconds, failed = asyncio.run(
                        batch(base, args.latency_turns, args.latency_concurrency, ramp)
                    )
                    errors[name] += failed
                    latency[name] |= {
                        f"{prefix}p50_ms": round(percentile(seconds, 0.5) * 1000, 1),
                        f"{prefix}p99_ms": round(percentile(seconds, 0.99) * 1000, 1),
                        f"{prefix}turns": len(seconds),
                    }
    rows = [
        {
            "layout": name,
            "cpu_ms_per_turn": round(statistics.median(cpu[name]), 4),
            "samples_ms": [round(s, 4) for s in cpu[name]],
            "cpu_ms_by_process": _median_of(by_process[name], 4),
            "redis_commands_per_turn": _median_of(commands[name], 2),
            **latency[name],
            "errors": errors[name],
        }
        for name in LAYOUTS
    ]
    by = {r["layout"]: r for r in rows}
    result = {
        **result_header("queue_split"),
        "settings": {
            "turns": args.turns,
            "repeats": args.repeats,
            "concurrency": args.concurrency,
            "latency_turns": args.latency_turns,
            "latency_concurrency": args.latency_concurrency,
            "llm_latency_ms": args.llm_latency_ms,
            "latency_ramp_s": ramp_s,
            "worker_concurrency": args.worker_concurrency,
            "store": "redis://",
        },
        "results": rows,
        "cpu_ratio": round(by["split"]["cpu_ms_per_turn"] / by["all"]["cpu_ms_per_turn"], 3),
        "added_p99_ms": round(by["split"]["p99_ms"] - by["all"]["p99_ms"], 1),
        "added_burst_p99_ms": round(by["split"]["burst_p99_ms"] - by["all"]["burst_p99_ms"], 1),
        "target_cpu_ratio": TARGET_CPU_RATIO,
        "target_added_p99_ms": TARGET_ADDED_P99_MS,
        "errors_total": sum(errors.values()),
    }
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    sys.exit(1 if result["errors_total"] else 0)


if __name__ == "__main__":
    main()
