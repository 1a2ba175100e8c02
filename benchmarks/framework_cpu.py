"""CPU per turn of each hosted framework's adapter beside a plain agenthost agent, and
beside LangGraph's own development server (`langgraph dev`, in-memory) running the same
graph, in the same run.

Each target is an echo-like agent (`benchmarks/echo_agents.py`,
`benchmarks/echo_langgraph.py`: one model call on `sim://?words=0`, no tool) served on a
free loopback port; `--turns` non-streaming turns are sent from `--concurrency` threads, spread over
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
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from turn_cpu import result_header

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


Send = Any
"""`send(client, session, message) -> answer text`: one turn over the thread's client."""


def measure(
    port: int,
    proc: psutil.Process,
    send: Send,
    sessions: list[str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Warm up, then drive `args.turns` turns from `args.concurrency` threads (each with its
    own connection and its own sessions, so no turn waits for a busy session), and divide
    the server's CPU by the turns answered. An answer that is not the echo is an error."""
    workers = max(1, min(args.concurrency, len(sessions)))
    clients = [JSONClient(port) for _ in range(workers)]
    errors = 0

    def drive(worker: int, count: int, label: str) -> None:
        nonlocal errors
        mine = sessions[worker::workers]
        for i in range(count):
            message = f"{label} {worker}-{i}"
            try:
                answer = send(clients[worker], mine[i % len(mine)], message)
            except Exception:
                errors += 1
                continue
            if not answer.startswith(f"sim: {message}"):
                errors += 1

    def run(total: int, label: str) -> None:
        share = [total // workers + (1 if w < total % workers else 0) for w in range(workers)]
        threads = [
            threading.Thread(target=drive, args=(w, share[w], label)) for w in range(workers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    run(args.warmup, "warm")
    errors = 0
    cpu0, wall0 = tree_cpu(proc), time.monotonic()
    run(args.turns, "turn")
    cpu, wall = tree_cpu(proc) - cpu0, time.monotonic() - wall0
    return {
        "turns": args.turns,
        "errors": errors,
        "cpu_ms_per_turn": round(cpu * 1000 / args.turns, 3),
        "turns_per_s": round(args.turns / wall, 1) if wall else None,
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

        def send(client: JSONClient, session: str, message: str) -> str:
            reply = client.post(f"/v1/sessions/{session}/turns", {"message": message})
            return str(reply["response"])

        sessions = [f"{target}-{i}" for i in range(args.sessions)]
        return measure(port, psutil.Process(server.pid), send, sessions, args)
    finally:
        server.terminate()
        server.wait(30)


def run_langgraph_dev(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    port = free_port()
    log = tmp / "langgraph-dev.log"
    project = tmp / "lg"
    project.mkdir()
    graph = f"{ROOT / 'echo_langgraph.py'}:graph"
    (project / "langgraph.json").write_text(
        json.dumps({"dependencies": ["."], "graphs": {"echo": graph}})
    )
    env = {**os.environ, "FRAMEWORK_BENCH_LLM": LLM_URL, "LANGSMITH_TRACING": "false"}
    env["PYTHONPATH"] = str(ROOT)
    command = [
        str(Path(args.langgraph_bin).resolve()),
        "dev",
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
    ]
    command += ["--no-browser", "--no-reload"]
    with log.open("ab") as out:
        server = subprocess.Popen(
            command, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}/ok", server, log)
        setup = JSONClient(port)
        # A thread per session, made before the measured turns.
        threads = {f"lg-{i}": setup.post("/threads", {})["thread_id"] for i in range(args.sessions)}

        def send(client: JSONClient, session: str, message: str) -> str:
            body = {
                "assistant_id": "echo",
                "input": {"messages": [{"role": "user", "content": message}]},
            }
            state = client.post(f"/threads/{threads[session]}/runs/wait", body)
            return str(state["messages"][-1]["content"])

        return measure(port, psutil.Process(server.pid), send, list(threads), args)
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
    parser.add_argument("--concurrency", type=int, default=8, help="turns in flight at once")
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
        **result_header("framework_cpu"),
        "params": {
            "concurrency": args.concurrency,
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
