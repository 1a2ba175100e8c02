"""CPU per turn of each hosted framework's adapter beside a plain agenthost agent, and
beside LangGraph's own development server (`langgraph dev`, in-memory) running the same
graph, in the same run.

Each target is an echo-like agent (`benchmarks/echo_agents.py`,
`benchmarks/echo_langgraph.py`: one model call on `sim://?words=0`, no tool) served on a
free loopback port; `--turns` non-streaming turns are sent one after another, spread over
`--sessions` sessions (so framework state grows over `turns / sessions` turns each), after
`--warmup` turns, and the server's process CPU (with its children) is divided by the turns
answered. agenthost runs on the memory store (`--store` to change it). `langgraph dev` is
run from `--langgraph-bin` (a `langgraph` executable of an environment with
`langgraph-cli[inmem]` and this package installed); without it that target is skipped and
the JSON says so. Prints one JSON object (also written to `--json FILE`).

    python benchmarks/framework_cpu.py --turns 2000 --langgraph-bin /path/to/venv/bin/langgraph
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent
AGENTHOST = str(Path(sys.executable).with_name("agenthost"))
LLM_URL = "sim://?words=0"
TARGETS = {
    "plain": "echo_agents:plain",
    "langgraph": "echo_langgraph:graph",
    "openai-agents": "echo_agents:openai_agent",
    "pydantic-ai": "echo_agents:pydantic_agent",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def tree_cpu(proc: psutil.Process) -> float:
    """User + system CPU seconds of the process and its children (live ones)."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            times = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


class JSONClient:
    """One keep-alive HTTP connection (the load generator's cost stays out of the figure:
    it runs in this process, the server in another)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        self.conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status >= 300:
            raise RuntimeError(f"POST {path}: {resp.status} {data[:300]!r}")
        return json.loads(data) if data else None


def measure(
    port: int,
    proc: psutil.Process,
    send: Any,
    sessions: list[str],
    turns: int,
    warmup: int,
) -> dict[str, Any]:
    for i in range(warmup):
        send(sessions[i % len(sessions)], f"warm {i}")
    cpu0, wall0 = tree_cpu(proc), time.monotonic()
    for i in range(turns):
        send(sessions[i % len(sessions)], f"turn {i}")
    cpu, wall = tree_cpu(proc) - cpu0, time.monotonic() - wall0
    return {
        "turns": turns,
        "cpu_ms_per_turn": round(cpu * 1000 / turns, 3),
        "wall_s": round(wall, 2),
    }


def run_agenthost(target: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    port = free_port()
    log = tmp / f"{target}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHOST_")}
    command = [AGENTHOST, "serve", "--app-dir", str(ROOT), TARGETS[target], "--host", "127.0.0.1"]
    command += ["--port", str(port), "--store", args.store, "--llm", LLM_URL]
    command += ["--allow-no-auth", "--log-level", "warning", "--history-window", "50"]
    with log.open("ab") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", server, log)
        client = JSONClient(port)

        def send(session: str, message: str) -> None:
            client.post(f"/v1/sessions/{session}/turns", {"message": message})

        sessions = [f"{target}-{i}" for i in range(args.sessions)]
        return measure(port, psutil.Process(server.pid), send, sessions, args.turns, args.warmup)
    finally:
        server.terminate()
        server.wait(30)


def run_langgraph_dev(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    port = free_port()
    log = tmp / "langgraph-dev.log"
    project = tmp / "lg"
    project.mkdir()
    (project / "langgraph.json").write_text(
        json.dumps(
            {"dependencies": ["."], "graphs": {"echo": f"{ROOT / 'echo_langgraph.py'}:graph"}}
        )
    )
    env = {**os.environ, "FRAMEWORK_BENCH_LLM": LLM_URL, "LANGSMITH_TRACING": "false"}
    env["PYTHONPATH"] = str(ROOT)
    command = [args.langgraph_bin, "dev", "--port", str(port), "--host", "127.0.0.1"]
    command += ["--no-browser", "--no-reload"]
    with log.open("ab") as out:
        server = subprocess.Popen(
            command, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}/ok", server, log)
        client = JSONClient(port)
        threads: dict[str, str] = {}

        def send(session: str, message: str) -> None:
            if session not in threads:
                threads[session] = client.post("/threads", {})["thread_id"]
            body = {
                "assistant_id": "echo",
                "input": {"messages": [{"role": "user", "content": message}]},
            }
            client.post(f"/threads/{threads[session]}/runs/wait", body)

        sessions = [f"lg-{i}" for i in range(args.sessions)]
        for session in sessions:  # threads are made before the measured turns
            send(session, "hello")
        return measure(port, psutil.Process(server.pid), send, sessions, args.turns, args.warmup)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--targets", default="plain,langgraph,openai-agents,pydantic-ai,langgraph-dev"
    )
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--store", default="memory://")
    parser.add_argument("--langgraph-bin", default=None, help="`langgraph` of an environment "
                        "with langgraph-cli[inmem] and this package")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for target in args.targets.split(","):
            if target == "langgraph-dev":
                if not args.langgraph_bin:
                    results[target] = {"skipped": "no --langgraph-bin"}
                    continue
                results[target] = run_langgraph_dev(args, tmp)
            else:
                results[target] = run_agenthost(target, args, tmp)
            print(f"{target}: {results[target]}", file=sys.stderr, flush=True)
    plain = results.get("plain", {}).get("cpu_ms_per_turn")
    for result in results.values():
        if plain and "cpu_ms_per_turn" in result:
            result["vs_plain"] = round(result["cpu_ms_per_turn"] / plain, 2)
    report = {
        "benchmark": "framework_cpu",
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "params": {
            "turns": args.turns,
            "warmup": args.warmup,
            "sessions": args.sessions,
            "store": args.store,
            "llm": LLM_URL,
        },
        "results": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
