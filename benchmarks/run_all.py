"""`make bench`: runs every benchmark, stores its JSON in benchmarks/results/, and regenerates
docs/benchmarks.md from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

BENCHMARKS = [
    # The default window (50 messages): at history 100 the agent is handed 50 messages.
    # redis-tenant: the same with --auth keys and both per-tenant limits checked each turn.
    ["benchmarks/turn_cpu.py", "--targets", "baseline,sqlite,redis,redis-tenant,redis-cluster",
     "--turns", "3000", "--json", "benchmarks/results/turn_cpu.json"],
    # A fixed window of 5: history length alone, the claim that a turn's cost is flat in it.
    ["benchmarks/turn_cpu.py", "--targets", "baseline,sqlite,redis", "--turns", "3000",
     "--history-window", "5", "--json", "benchmarks/results/turn_cpu_window5.json"],
    # Sessions held by one process at a 2 s LLM, verified by agenthost loadtest.
    ["benchmarks/concurrent_sessions.py", "--sessions", "2000,10000", "--turns", "3",
     "--json", "benchmarks/results/concurrent_sessions.json"],
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
    ["benchmarks/idle_websockets.py", "--connections", "3000", "--profile",
     "--json", "benchmarks/results/idle_websockets_profile.json"],
    # Server CPU per streamed turn through each client protocol adapter against native SSE.
    ["benchmarks/adapter_cpu.py", "--turns", "1000", "--repeats", "9",
     "--json", "benchmarks/results/adapter_cpu.json"],
]  # fmt: skip


def main() -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    for args in BENCHMARKS:
        print("running", " ".join(args), flush=True)
        subprocess.run([sys.executable, *args], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "benchmarks/render_docs.py"], check=True, cwd=ROOT)


if __name__ == "__main__":
    main()
