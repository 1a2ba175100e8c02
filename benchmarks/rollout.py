"""A rolling replacement of a 3-replica fleet under load: does any turn fail or go missing,
and what does it do to latency?

Starts `agenthost cluster up --replicas 3` (redis-server, HAProxy, 3 processes; with
`--workers N`, the 3 run `--role api` and N `--role worker` processes run the turns), drives
it with `agenthost loadtest` (SSE, then WebSocket), runs `agenthost cluster rollout` (every
replica, then every worker) in the middle, and reads the load test's verified report.
Prints one JSON object.

    python benchmarks/rollout.py --sessions 500 --duration 40 [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from turn_cpu import free_port, result_header

ROOT = Path(__file__).resolve().parent.parent
AGENTHOST = str(Path(sys.executable).with_name("agenthost"))
LLM = "sim://?ttft_ms=200&tokens_per_s=50&words=20"


def during_rollout(
    timeline: list[dict[str, Any]], start_s: float, end_s: float
) -> list[dict[str, Any]]:
    """The load test's timeline points (`agenthost.loadtest.report.timeline`: slices of
    `width_s` from `start_s`) that overlap the rollout's seconds since the load began."""
    return [p for p in timeline if p["start_s"] <= end_s and p["start_s"] + p["width_s"] >= start_s]


def run_mode(mode: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    directory = tmp / f"cluster-{mode}"
    port = free_port()
    subprocess.run(
        [AGENTHOST, "cluster", "up", "--replicas", "3", "--workers", str(args.workers),
         "--port", str(port), "--llm", LLM, "--dir", str(directory)],
        check=True, stdout=subprocess.DEVNULL, timeout=120,
    )  # fmt: skip
    try:
        out = tmp / f"load-{mode}.json"
        started = time.monotonic()
        load = subprocess.Popen(
            [AGENTHOST, "loadtest", "--url", f"http://127.0.0.1:{port}", "--mode", mode,
             "--sessions", str(args.sessions), "--duration", str(args.duration), "--think", "1",
             "--ramp", "5", "--quiet", "--json", str(out)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(args.duration / 4)  # the load runs steadily before the rollout
        rollout_start = time.monotonic() - started
        subprocess.run(
            [AGENTHOST, "cluster", "rollout", "--dir", str(directory)],
            check=True, stdout=subprocess.DEVNULL, timeout=600,
        )  # fmt: skip
        rollout_end = time.monotonic() - started
        load.wait(args.duration + 300)
        report = json.loads(out.read_text())
    finally:
        subprocess.run([AGENTHOST, "cluster", "down", "--dir", str(directory)],
                       stdout=subprocess.DEVNULL, timeout=300)  # fmt: skip
    during = during_rollout(report["timeline"], rollout_start, rollout_end)
    v = report["verification"] or {}
    return {
        "mode": mode,
        "sessions": args.sessions,
        "answered": report["answered"],
        "failed": report["failed"],
        "lost": v.get("lost"),
        "duplicated": v.get("duplicated"),
        "out_of_order": v.get("out_of_order"),
        "mismatched": v.get("mismatched"),
        "retries": report["retries"],
        "p50_ms": report["latency_ms"]["p50"],
        "p99_ms": report["latency_ms"]["p99"],
        "p99_during_rollout_ms": max(
            (p["p99_ms"] for p in during if p["p99_ms"] is not None), default=None
        ),
        "rollout_s": round(rollout_end - rollout_start, 1),
        "client_saturated": report["saturated"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--duration", type=float, default=40.0)
    parser.add_argument("--modes", default="sse,ws")
    parser.add_argument(
        "--workers", type=int, default=0, help="worker processes (0: the replicas run turns)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
        for mode in args.modes.split(","):
            rows.append(run_mode(mode, args, Path(tmp)))
            print(json.dumps(rows[-1]), file=sys.stderr)
    result = {
        **result_header("rollout"),
        "llm": LLM,
        "workers": args.workers,
        "results": rows,
    }
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
