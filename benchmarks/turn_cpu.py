"""CPU per answered turn: agenthost's stores against the reference design's sample server.

For each target it starts the server (and a redis-server where one is needed) on free
loopback ports, gives a set of sessions a history of H messages, then drives `--turns`
non-streaming turns from a separate load-generator process and divides the server's (and
redis-server's) process CPU by the turns answered. CPU time, unlike wall time, is stable on
a noisy machine. Prints one JSON object (also written to `--json FILE`).

    python benchmarks/turn_cpu.py --targets baseline,sqlite,redis --turns 3000
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
AGENTHOST = str(Path(PYTHON).with_name("agenthost"))
TARGETS = ("baseline", "sqlite", "memory", "redis", "redis-cluster")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system + times.children_user + times.children_system


@contextlib.contextmanager
def process(
    args: list[str], env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[tuple[str, list[int]]]:
    port = free_port()
    args = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
            "--appendonly", "no", "--dir", str(workdir)]  # fmt: skip
    with process(args) as proc:
        deadline = time.monotonic() + 10
        while (
            subprocess.run(
                ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True
            ).stdout.strip()
            != "PONG"
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", [proc.pid]


@contextlib.contextmanager
def redis_cluster(workdir: Path) -> Iterator[tuple[str, list[int]]]:
    ports: list[int] = []
    while len(ports) < 3:
        p = free_port()
        if p + 10000 < 65536:
            ports.append(p)
    with contextlib.ExitStack() as stack:
        pids = []
        for p in ports:
            d = workdir / f"node-{p}"
            d.mkdir()
            args = ["redis-server", "--bind", "127.0.0.1", "--port", str(p), "--save", "",
                    "--appendonly", "no", "--dir", str(d), "--cluster-enabled", "yes"]  # fmt: skip
            pids.append(stack.enter_context(process(args)).pid)
        for p in ports:
            deadline = time.monotonic() + 10
            while (
                subprocess.run(
                    ["redis-cli", "-p", str(p), "ping"], capture_output=True, text=True
                ).stdout.strip()
                != "PONG"
            ):
                if time.monotonic() > deadline:
                    raise RuntimeError("cluster node did not start")
                time.sleep(0.05)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not all(
            "cluster_state:ok"
            in subprocess.run(
                ["redis-cli", "-p", str(p), "cluster", "info"], capture_output=True, text=True
            ).stdout
            for p in ports
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("cluster did not become ok")
            time.sleep(0.1)
        yield f"redis+cluster://127.0.0.1:{ports[0]}", pids


@contextlib.contextmanager
def target_server(
    target: str, workdir: Path, history_window: int
) -> Iterator[tuple[str, str, list[int]]]:
    """Start `target`; yield (base URL, loadgen kind, pids whose CPU counts)."""
    port = free_port()
    with contextlib.ExitStack() as stack:
        extra: list[int] = []
        if target == "baseline":
            url, extra = stack.enter_context(redis_server(workdir))
            env = {**os.environ, "BASELINE_REDIS_URL": url}
            args = [PYTHON, str(ROOT / "benchmarks" / "baseline_server.py"), "--port", str(port)]
            proc = stack.enter_context(process(args, env))
            wait_http(f"http://127.0.0.1:{port}/healthz")
            yield f"http://127.0.0.1:{port}", "baseline", [proc.pid, *extra]
            return
        if target == "sqlite":
            store = f"sqlite:///{workdir / 'bench.db'}"
        elif target == "memory":
            store = "memory://"
        elif target == "redis":
            store, extra = stack.enter_context(redis_server(workdir))
        else:
            store, extra = stack.enter_context(redis_cluster(workdir))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHOST_")}
        # words=0: the simulator echoes the message, as the baseline's agent does, so both
        # sides do the same agent work and the figure compares the servers.
        args = [AGENTHOST, "serve", "--port", str(port), "--store", store,
                "--llm", "sim://?words=0", "--history-window", str(history_window),
                "--log-level", "warning"]  # fmt: skip
        proc = stack.enter_context(process(args, env))
        wait_http(f"http://127.0.0.1:{port}/readyz")
        yield f"http://127.0.0.1:{port}", "agenthost", [proc.pid, *extra]


def loadgen(url: str, kind: str, prefix: str, **options: Any) -> dict[str, Any]:
    args = [PYTHON, str(ROOT / "benchmarks" / "loadgen.py"), "--url", url, "--kind", kind,
            "--prefix", prefix]  # fmt: skip
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    out = subprocess.run(args, capture_output=True, text=True, check=True, cwd=ROOT)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def measure(target: str, histories: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-{target}-"))
        url, kind, pids = stack.enter_context(target_server(target, Path(tmp), args.history_window))
        loadgen(url, kind, "warm", sessions=50, turns=args.warmup, concurrency=16)
        for history in histories:
            prefix = f"h{history}"
            common = {"sessions": args.sessions, "concurrency": args.concurrency}
            if history:
                loadgen(url, kind, prefix, prefill=history, prefill_only=True, **common)
            before = {pid: cpu_seconds(pid) for pid in pids}
            result = loadgen(url, kind, prefix, turns=args.turns, **common)
            after = {pid: cpu_seconds(pid) for pid in pids}
            answered = max(1, int(result["answered"]))
            server_ms = (after[pids[0]] - before[pids[0]]) * 1000 / answered
            redis_ms = sum(after[p] - before[p] for p in pids[1:]) * 1000 / answered
            rows.append(
                {
                    "target": target,
                    "history": history,
                    "turns": result["answered"],
                    "errors": result["errors"],
                    "turns_per_s": round(result["answered"] / result["seconds"], 1),
                    "server_cpu_ms_per_turn": round(server_ms, 4),
                    "redis_cpu_ms_per_turn": round(redis_ms, 4),
                    "cpu_ms_per_turn": round(server_ms + redis_ms, 4),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def summarize(rows: list[dict[str, Any]], histories: list[int]) -> dict[str, Any]:
    by = {(r["target"], r["history"]): r["cpu_ms_per_turn"] for r in rows}
    low, high = min(histories), max(histories)
    summary: dict[str, Any] = {}
    for target in dict.fromkeys(r["target"] for r in rows):
        entry: dict[str, Any] = {
            f"h{h}_cpu_ms_per_turn": by[(target, h)] for h in histories if (target, h) in by
        }
        if (target, low) in by and (target, high) in by and by[(target, low)]:
            entry["flatness_high_over_low"] = round(by[(target, high)] / by[(target, low)], 3)
        if target != "baseline":
            for h in histories:
                if ("baseline", h) in by and by.get((target, h)):
                    entry[f"baseline_over_this_h{h}"] = round(
                        by[("baseline", h)] / by[(target, h)], 2
                    )
        summary[target] = entry
    return summary


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=ROOT)  # fmt: skip
    return out.stdout.strip() or "unknown"


def machine() -> dict[str, Any]:
    model = platform.processor()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", default="baseline,sqlite,redis",
                        help=f"comma-separated, of {', '.join(TARGETS)}")  # fmt: skip
    parser.add_argument("--histories", default="5,100", help="history lengths in messages")
    parser.add_argument("--turns", type=int, default=3000, help="measured turns per point")
    parser.add_argument("--sessions", type=int, default=500, help="sessions per history point")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument(
        "--history-window",
        type=int,
        default=50,
        help="messages agenthost hands the agent per turn (its --history-window); the "
        "baseline always reads the whole history",
    )
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for t in targets:
        if t not in TARGETS:
            parser.error(f"unknown target {t!r}")
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed (make system-deps)")
    histories = [int(h) for h in args.histories.split(",")]
    rows: list[dict[str, Any]] = []
    for target in targets:
        rows += measure(target, histories, args)
    result = {
        "benchmark": "turn_cpu",
        "command": "python benchmarks/turn_cpu.py " + " ".join(sys.argv[1:]),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": git_commit(),
        "machine": machine(),
        "params": {
            "turns": args.turns,
            "sessions": args.sessions,
            "concurrency": args.concurrency,
            "histories": histories,
            "history_window": args.history_window,
        },
        "results": rows,
        "summary": summarize(rows, histories),
    }
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
