"""`make bench`: runs every benchmark, stores its JSON in benchmarks/results/, and regenerates
docs/benchmarks.md from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
# `langgraph dev` (langgraph-cli[inmem]) lives in its own environment: its dependencies pin
# other versions than agenthost's (`make langgraph-dev-env`).
LANGGRAPH_DEV = ROOT / ".venv-langgraph-dev" / "bin" / "langgraph"


def written(name: str) -> str:
    """Where a benchmark added since the last recorded run writes its JSON (the next `make
    bench` creates it)."""
    return f"benchmarks/results/{name}.json"


BENCHMARKS = [
    # The default window (50 messages): at history 100 the agent is handed 50 messages.
    # redis-tenant: the same with --auth keys and both per-tenant limits checked each turn.
    ["benchmarks/turn_cpu.py", "--targets", "baseline,sqlite,redis,redis-tenant,redis-cluster",
     "--turns", "3000", "--json", "benchmarks/results/turn_cpu.json"],
    # A fixed window of 5: history length alone, the claim that a turn's cost is flat in it.
    ["benchmarks/turn_cpu.py", "--targets", "baseline,sqlite,redis", "--turns", "3000",
     "--history-window", "5", "--json", "benchmarks/results/turn_cpu_window5.json"],
    # Realistic sizes (issue 21): 1 KB messages at history 5 and 200, window 50, each store
    # with its window cache and without it (--window-cache-mb 0) in the same run.
    ["benchmarks/turn_cpu.py", "--targets", "redis,redis-nocache,sqlite,sqlite-nocache",
     "--histories", "5,200", "--message-bytes", "1024", "--sessions", "200",
     "--turns", "3000", "--flatness-target", "1.3",
     "--json", written("turn_cpu_1kb_window50")],
    # Sessions held by one process at a 2 s LLM, verified by agenthost loadtest.
    ["benchmarks/turn_cpu.py", "--targets", "baseline,redis,postgres,postgres+cache",
     "--histories", "5,100", "--turns", "2000", "--sessions", "200", "--repeats", "5",
     "--json", written("turn_cpu_postgres")],
    ["benchmarks/turn_cpu.py", "--targets", "baseline,redis,postgres,postgres+cache",
     "--histories", "5,100", "--turns", "2000", "--sessions", "200", "--repeats", "5",
     "--message-bytes", "1024", "--json", written("turn_cpu_postgres_1kb")],
    ["benchmarks/durability.py", "--cache", "--sessions", "500", "--turns", "5",
     "--json", written("durability_cache")],
    ["benchmarks/queue_split.py", "--turns", "3000", "--repeats", "3", "--latency-turns", "2000",
     "--json", written("queue_split")],
    ["benchmarks/concurrent_sessions.py", "--sessions", "2000,10000", "--turns", "3",
     "--json", "benchmarks/results/concurrent_sessions.json"],
    # The same at 10,000 sessions on every core: --workers 2 on Redis (issue 21's target:
    # +100 ms p99 with headroom).
    ["benchmarks/concurrent_sessions.py", "--sessions", "10000", "--turns", "3",
     "--workers", "2", "--json", written("concurrent_sessions_workers2")],
    # A rollout of a 3-replica fleet under SSE, then WebSocket, load.
    ["benchmarks/rollout.py", "--sessions", "500", "--duration", "40", "--modes", "sse,ws",
     "--json", "benchmarks/results/rollout.json"],
    # Client CPU per LLM request through the openai SDK, aiohttp against httpx transport.
    ["benchmarks/llm_transport.py", "--requests", "2000", "--concurrency", "50",
     "--json", "benchmarks/results/llm_transport.json"],
    # Streamed turns at 30 tokens/s over SSE and WebSocket, coalescing off and at its default,
    # on the in-process broker and on Redis Streams.
    ["benchmarks/stream_gaps.py", "--streams", "1000,2000", "--stores", "memory,redis",
     "--transport", "sse,ws", "--coalesce-ms", "0,20",
     "--json", "benchmarks/results/stream_gaps.json"],
    # Memory per idle WebSocket at 10,000 connections, then where it goes (tracemalloc).
    ["benchmarks/idle_websockets.py", "--connections", "10000",
     "--json", "benchmarks/results/idle_websockets.json"],
    # 20,000 across `serve --workers 2` (issue 21: at most 20 KB each).
    ["benchmarks/idle_websockets.py", "--connections", "20000", "--server-processes", "2",
     "--clients", "4", "--json", written("idle_websockets_workers2")],
    ["benchmarks/idle_websockets.py", "--connections", "3000", "--profile",
     "--json", "benchmarks/results/idle_websockets_profile.json"],
    # What users run: streamed turns of an agent calling llm-sim over HTTP (50 tokens, 1 KB
    # messages, window 50) beside the sample server and `langgraph dev` (installed into
    # benchmarks/.langgraph-venv on first use).
    ["benchmarks/streamed_turns.py", "--targets", "agenthost,baseline,langgraph",
     "--sessions", "200", "--turns", "3", "--json", written("streamed_turns")],
    # Server CPU per streamed turn through each client protocol adapter against native SSE.
    ["benchmarks/adapter_cpu.py", "--turns", "1000", "--repeats", "9",
     "--json", "benchmarks/results/adapter_cpu.json"],
    # CPU per turn of each hosted framework beside a plain agent, and beside `langgraph dev`
    # when `make langgraph-dev-env` made its environment.
    ["benchmarks/framework_cpu.py", "--turns", "2000",
     *(["--langgraph-bin", str(LANGGRAPH_DEV)] if LANGGRAPH_DEV.exists() else []),
     # (its results are written by the first quiet run: RESULTS has none yet)
     "--json", str(RESULTS / "framework_cpu.json")],
]  # fmt: skip


def main() -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    for args in BENCHMARKS:
        print("running", " ".join(args), flush=True)
        subprocess.run([sys.executable, *args], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "benchmarks/render_docs.py"], check=True, cwd=ROOT)


if __name__ == "__main__":
    main()
