"""Server CPU per streamed turn of an agent that calls a real LLM over HTTP: what users run.

For each target it starts `agenthost llm-sim` in its own process (answers of `--tokens`
tokens at `--tokens-per-s`), a throw-away redis-server, and the server under test:

- `agenthost`: `agenthost serve --store redis://... --llm http://llm-sim/v1`, the built-in
  agent (it streams the window and the new message through `turn.llm`), window `--window`;
  turns are streamed to the client over SSE (`stream: true`).
- `baseline`: the reference design's sample server (`benchmarks/baseline_server.py`), its
  agent extended the obvious way: the whole history streamed from the same llm-sim through
  the `openai` SDK, the joined answer returned as JSON (the design has no client streaming).
- `langgraph`: `langgraph dev` (langgraph-cli[inmem], in memory) serving a one-node graph
  whose node calls `ChatOpenAI(streaming=True)` against the same llm-sim, runs streamed with
  `stream_mode=messages`. Installed into its own venv under `--langgraph-venv` on first use
  (from PyPI); when that fails, the row says why and the run goes on.

Every session first gets `--history` messages of `--message-bytes` bytes (untimed), then a
load-generator process (this script with `--client`) sends `--turns` turns per session over
`--sessions` sessions at `--concurrency`, each turn a new `--message-bytes` message, and
checks each answer has its `--tokens` tokens. Reported per target: server CPU per turn and
per token (the server's process tree; with Redis's CPU added where it keeps the sessions),
turns/s, and the ratios to agenthost (issue 21's targets: 3x the baseline, 20x LangGraph).
A message is one word of `--message-bytes` bytes so an answer (which echoes it) stays
`--tokens` tokens long. Prints one JSON object (also written to `--json FILE`).

    python benchmarks/streamed_turns.py --targets agenthost,baseline,langgraph
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from turn_cpu import (
    AGENTHOST,
    PYTHON,
    ROOT,
    ServerDied,
    cpu_seconds,
    free_port,
    process,
    redis_server,
    result_header,
    wait_http,
)

TARGETS = ("agenthost", "baseline", "langgraph")
TARGET_RATIOS = {"baseline": 3.0, "langgraph": 20.0}
"""Issue 21: agenthost's CPU per streamed turn at least this many times lower."""
MODEL = "agenthost-sim"
LANGGRAPH_PACKAGES = ["langgraph-cli[inmem]", "langchain-openai"]


# -- the load generator (its own process, so its CPU is not the server's) ------------------


def message(size: int, n: int) -> str:
    """One word of `size` bytes: the simulator echoes it as a single token."""
    head = f"m{n}-"
    return (head + "x" * size)[:size]


async def agenthost_turn(http: aiohttp.ClientSession, base: str, sid: str, text: str) -> int:
    """A streamed turn over SSE; the number of chunk events received (-1: failed)."""
    async with http.post(
        f"{base}/v1/sessions/{sid}/turns", json={"message": text, "stream": True}
    ) as resp:
        if resp.status != 200:
            return -1
        chunks, done = 0, False
        async for line in resp.content:
            if line.startswith(b"event: chunk"):
                chunks += 1
            elif line.startswith(b"event: done"):
                done = True
            elif line.startswith(b"event: error"):
                return -1
        return chunks if done else -1


async def baseline_turn(http: aiohttp.ClientSession, base: str, sid: str, text: str) -> int:
    async with http.post(f"{base}/chat/{sid}", json={"message": text}) as resp:
        if resp.status != 200:
            return -1
        body = await resp.json()
        return 1 if body.get("response", "").startswith("sim: ") else -1


async def langgraph_turn(http: aiohttp.ClientSession, base: str, sid: str, text: str) -> int:
    """A streamed run on the session's thread (created on first use)."""
    payload = {
        "assistant_id": "agent",
        "input": {"messages": [{"role": "user", "content": text}]},
        "stream_mode": "messages-tuple",
        "if_not_exists": "create",
    }
    thread = uuid.uuid5(uuid.NAMESPACE_URL, sid)  # LangGraph's thread ids are UUIDs
    async with http.post(f"{base}/threads/{thread}/runs/stream", json=payload) as resp:
        if resp.status != 200:
            return -1
        chunks = 0
        async for line in resp.content:
            if line.startswith(b"event: messages"):
                chunks += 1
            elif line.startswith(b"event: error"):
                return -1
        return chunks if chunks else -1


TURNS = {"agenthost": agenthost_turn, "baseline": baseline_turn, "langgraph": langgraph_turn}


async def drive(args: argparse.Namespace, turns_per_session: int, label: str) -> dict[str, Any]:
    sessions = [f"{args.prefix}-{i}" for i in range(args.sessions)]
    per_worker = [sessions[w :: args.concurrency] for w in range(args.concurrency)]
    run = TURNS[args.client]
    errors = 0
    answered = 0
    chunks = 0
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:

        async def worker(mine: list[str]) -> None:
            nonlocal errors, answered, chunks
            for n in range(turns_per_session):
                for sid in mine:
                    try:
                        got = await run(http, args.url, sid, message(args.message_bytes, n))
                    except (aiohttp.ClientError, TimeoutError):
                        got = -1
                    if got < 0:
                        errors += 1
                    else:
                        answered += 1
                        chunks += got

        started = time.perf_counter()
        await asyncio.gather(*(worker(m) for m in per_worker if m))
        seconds = time.perf_counter() - started
    return {"label": label, "turns": answered, "errors": errors, "chunks": chunks,
            "seconds": round(seconds, 3)}  # fmt: skip


def client_main(args: argparse.Namespace) -> None:
    turns = args.prefill_turns if args.phase == "prefill" else args.turns
    result = asyncio.run(drive(args, turns, args.phase))
    print(json.dumps(result))


def run_client(
    target: str, base: str, args: argparse.Namespace, phase: str, prefix: str
) -> dict[str, Any]:
    command = [PYTHON, __file__, "--client", target, "--url", base, "--phase", phase,
               "--prefix", prefix, "--sessions", str(args.sessions),
               "--concurrency", str(args.concurrency), "--turns", str(args.turns),
               "--prefill-turns", str(args.history // 2),
               "--message-bytes", str(args.message_bytes)]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# -- the servers ---------------------------------------------------------------------------


LANGGRAPH_GRAPH = '''
"""A one-node graph: the model, streaming, on the thread's messages."""
import os

from langchain_openai import ChatOpenAI
from langgraph.graph import START, MessagesState, StateGraph

model = ChatOpenAI(
    base_url=os.environ["BENCH_LLM_URL"], api_key="unused", model="{model}", streaming=True
)


async def call_model(state: MessagesState) -> dict:
    return {{"messages": [await model.ainvoke(state["messages"])]}}


builder = StateGraph(MessagesState)
builder.add_node("model", call_model)
builder.add_edge(START, "model")
graph = builder.compile()
'''


def langgraph_venv(path: Path) -> Path:
    """A venv with `langgraph dev` and langchain-openai, made on first use; its bin/."""
    bin_dir = path / "bin"
    if not (bin_dir / "langgraph").exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run(
            [str(bin_dir / "python"), "-m", "pip", "install", "-q", *LANGGRAPH_PACKAGES],
            check=True,
        )
    return bin_dir


@contextlib.contextmanager
def target_server(
    target: str, workdir: Path, llm_url: str, args: argparse.Namespace
) -> Iterator[tuple[str, list[int], list[int], str]]:
    """Start `target`; yield (base URL, server pids, store pids, command shown)."""
    port = free_port()
    log = workdir / f"{target}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHOST_")}
    with contextlib.ExitStack() as stack:
        if target == "agenthost":
            store, store_pids = stack.enter_context(redis_server(workdir))
            command = [AGENTHOST, "serve", "--port", str(port), "--store", store,
                       "--llm", llm_url, "--llm-model", MODEL,
                       "--history-window", str(args.window), "--allow-no-auth",
                       "--log-level", "warning", "--no-access-log"]  # fmt: skip
            proc = stack.enter_context(process(command, log, env))
            wait_http(f"http://127.0.0.1:{port}/readyz", proc, log)
            shown = ("agenthost serve --store redis://… --llm http://llm-sim/v1 "
                     f"--history-window {args.window}")  # fmt: skip
            yield f"http://127.0.0.1:{port}", [proc.pid], store_pids, shown
        elif target == "baseline":
            store, store_pids = stack.enter_context(redis_server(workdir))
            command = [PYTHON, str(ROOT / "benchmarks" / "baseline_server.py"),
                       "--port", str(port), "--redis", store, "--llm-url", llm_url,
                       "--llm-model", MODEL]  # fmt: skip
            proc = stack.enter_context(process(command, log, env))
            wait_http(f"http://127.0.0.1:{port}/healthz", proc, log)
            shown = "python benchmarks/baseline_server.py --redis redis://… --llm-url …/v1"
            yield f"http://127.0.0.1:{port}", [proc.pid], store_pids, shown
        else:
            bin_dir = langgraph_venv(args.langgraph_venv)
            project = workdir / "langgraph-app"
            project.mkdir()
            (project / "graph.py").write_text(textwrap.dedent(LANGGRAPH_GRAPH.format(model=MODEL)))
            config = {"dependencies": ["."], "graphs": {"agent": "./graph.py:graph"}}
            (project / "langgraph.json").write_text(json.dumps(config))
            env = {**env, "BENCH_LLM_URL": llm_url, "LANGGRAPH_NO_ANALYTICS": "1"}
            command = [str(bin_dir / "langgraph"), "dev", "--port", str(port),
                       "--host", "127.0.0.1", "--no-browser", "--no-reload"]  # fmt: skip
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    command, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT
                )
            stack.callback(_stop, proc)
            wait_http(f"http://127.0.0.1:{port}/ok", proc, log, timeout=120)
            shown = "langgraph dev (inmem) with a ChatOpenAI(streaming=True) node"
            yield f"http://127.0.0.1:{port}", [proc.pid], [], shown


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def measure(target: str, workdir: Path, llm: tuple[str, int], args: argparse.Namespace) -> dict:
    llm_url, llm_pid = llm
    with target_server(target, workdir, llm_url, args) as (base, server_pids, store_pids, shown):
        prefix = f"{target}-{time.monotonic_ns()}"
        prefill = run_client(target, base, args, "prefill", prefix) if args.history else {}
        server_before = sum(cpu_seconds(p) for p in server_pids)
        store_before = sum(cpu_seconds(p) for p in store_pids)
        llm_before = cpu_seconds(llm_pid)
        measured = run_client(target, base, args, "measure", prefix)
        server_cpu = sum(cpu_seconds(p) for p in server_pids) - server_before
        store_cpu = sum(cpu_seconds(p) for p in store_pids) - store_before
        llm_cpu = cpu_seconds(llm_pid) - llm_before
    turns = max(1, measured["turns"])
    tokens = turns * args.tokens
    return {
        "target": target,
        "server_command": shown,
        "turns": measured["turns"],
        "errors": measured["errors"] + prefill.get("errors", 0),
        "chunks_per_turn": round(measured["chunks"] / turns, 1),
        "turns_per_s": round(measured["turns"] / max(measured["seconds"], 1e-9), 1),
        "server_cpu_ms_per_turn": round(server_cpu * 1000 / turns, 4),
        "store_cpu_ms_per_turn": round(store_cpu * 1000 / turns, 4),
        "cpu_ms_per_turn": round((server_cpu + store_cpu) * 1000 / turns, 4),
        "server_cpu_us_per_token": round(server_cpu * 1e6 / tokens, 2),
        "llm_sim_cpu_ms_per_turn": round(llm_cpu * 1000 / turns, 4),
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ours = next((r for r in rows if r["target"] == "agenthost" and "cpu_ms_per_turn" in r), None)
    summary: dict[str, Any] = {}
    if ours is None:
        return summary
    for row in rows:
        if row["target"] == "agenthost" or "cpu_ms_per_turn" not in row:
            continue
        ratio = row["cpu_ms_per_turn"] / ours["cpu_ms_per_turn"]
        summary[row["target"]] = {
            "ratio": round(ratio, 2),
            "target_ratio": TARGET_RATIOS[row["target"]],
            "meets_target": ratio >= TARGET_RATIOS[row["target"]],
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", default="agenthost,baseline,langgraph",
                        help=f"comma-separated, of {', '.join(TARGETS)}")  # fmt: skip
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--turns", type=int, default=3, help="measured turns per session")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--history", type=int, default=50, help="messages before measuring")
    parser.add_argument("--window", type=int, default=50, help="agenthost's --history-window")
    parser.add_argument("--message-bytes", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=50, help="tokens per answer")
    parser.add_argument("--tokens-per-s", type=float, default=1000, help="the stream's pace")
    parser.add_argument(
        "--langgraph-venv",
        type=Path,
        default=ROOT / "benchmarks" / ".langgraph-venv",
        help="where `langgraph dev` is installed on first use",
    )
    parser.add_argument("--json", type=Path, help="also write the result here")
    # The load generator's own flags (this script runs itself as the client process).
    parser.add_argument("--client", choices=TARGETS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--phase", default="measure", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="s", help=argparse.SUPPRESS)
    parser.add_argument("--prefill-turns", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args)
        return
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for t in targets:
        if t not in TARGETS:
            parser.error(f"unknown target {t!r}")
    if shutil.which("redis-server") is None:
        parser.error("redis-server is not installed (make system-deps)")
    # "sim: <message> | w1 ... wN": 3 tokens, then the words.
    words = max(1, args.tokens - 3)
    load_before = os.getloadavg()
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-streamed-turns-") as tmp:
        workdir = Path(tmp)
        llm_port = free_port()
        llm_log = workdir / "llm-sim.log"
        sim_flags = ["--latency-ms", "0", "--ttft-ms", "0",
                     "--tokens-per-s", str(args.tokens_per_s), "--words", str(words)]  # fmt: skip
        llm_command = [AGENTHOST, "llm-sim", "--host", "127.0.0.1", "--port", str(llm_port),
                       *sim_flags]  # fmt: skip
        with process(llm_command, llm_log) as llm:
            wait_http(f"http://127.0.0.1:{llm_port}/healthz", llm, llm_log)
            llm_url = f"http://127.0.0.1:{llm_port}/v1"
            for target in targets:
                try:
                    rows.append(measure(target, workdir, (llm_url, llm.pid), args))
                except (ServerDied, subprocess.CalledProcessError, OSError) as exc:
                    reason = getattr(exc, "stderr", None) or str(exc)
                    rows.append({"target": target, "skipped": str(reason)[-2000:]})
    result = {
        **result_header("streamed_turns"),
        "load_average_1m": {
            "before": round(load_before[0], 2),
            "after": round(os.getloadavg()[0], 2),
        },
        "seconds": round(time.monotonic() - started, 1),
        "params": {
            "sessions": args.sessions,
            "turns_per_session": args.turns,
            "concurrency": args.concurrency,
            "history": args.history,
            "window": args.window,
            "message_bytes": args.message_bytes,
            "tokens": args.tokens,
            "llm_sim": "agenthost llm-sim " + " ".join(sim_flags),
        },
        "targets": TARGET_RATIOS,
        "errors_total": sum(r.get("errors", 0) for r in rows),
        "results": rows,
        "summary": summarize(rows),
    }
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
