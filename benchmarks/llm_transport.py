"""Client CPU per LLM request through the official `openai` SDK, by HTTP transport.

Starts `agenthost llm-sim` on a free loopback port (no added latency, a fast token pace), then,
in this one client process, drives `--requests` non-streaming and `--requests` streaming chat
completions through `OpenAILLM` at `--concurrency` for each transport (`aiohttp`: the SDK's
`DefaultAioHttpClient`; `httpx`: its default). Every answer is checked against the
simulator's. Reports this process's CPU seconds per request (`time.process_time` deltas around
the measured requests only), requests/s and the simulator's CPU per request; the median of
`--repeats` runs, the transports interleaved within each run (their order alternating), so
the machine's other load falls on both. Each transport runs on both request paths
(`--paths`): `lean` (the SDK's generic `post` with a msgspec body, agenthost's default) and
`typed` (`chat.completions.create`, the SDK's own request building), answers read raw.
Prints one JSON object (also to `--json FILE`).

    python benchmarks/llm_transport.py --requests 2000 --concurrency 50
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from agenthost.llm import LLMError
from agenthost.llm.openai import (
    DEFAULT_LLM_TRANSPORT,
    LLM_TRANSPORTS,
    LLMTransport,
    OpenAILLM,
    RetryPolicy,
)
from agenthost.llm.sim_model import answer_for, split_tokens
from turn_cpu import cpu_seconds, free_port, process, result_header, wait_http

AGENTHOST = str(Path(sys.executable).with_name("agenthost"))
MODES = ("complete", "stream")
PATHS = ("lean", "typed")
"""How requests leave through the SDK (agenthost.llm.openai_requests)."""
TARGET_MS = {"complete": 0.5, "stream": 1.5}
"""Issue 21's targets: client CPU per non-streamed request and per 50-token stream."""
PROMPTS = 50
"""Distinct prompts, so the answers differ between requests but can be checked cheaply."""


def prompts(count: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"benchmark request {i}"}] for i in range(count)]


async def drive(
    llm: OpenAILLM,
    mode: str,
    requests: int,
    concurrency: int,
    messages: list[list[dict[str, str]]],
    expected: list[str],
) -> int:
    """`requests` calls from `concurrency` tasks; returns the failed or wrong ones."""
    numbers = iter(range(requests))
    failures = 0

    async def one(i: int) -> str:
        chosen = messages[i % len(messages)]
        if mode == "complete":
            return await llm.complete(chosen)
        return "".join([token async for token in llm.stream(chosen)])

    async def worker() -> None:
        nonlocal failures
        for i in numbers:  # shared: each number is taken by exactly one worker
            try:
                if await one(i) != expected[i % len(expected)]:
                    failures += 1
            except LLMError:
                failures += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failures


async def measure(
    transport: LLMTransport,
    path: str,
    base_url: str,
    sim_pid: int,
    args: argparse.Namespace,
    messages: list[list[dict[str, str]]],
    expected: list[str],
) -> dict[str, dict[str, float]]:
    """One run of both modes through a fresh client of `transport`."""
    # No retries: a failure is counted, not hidden behind a second request.
    llm = OpenAILLM(
        base_url,
        model="agenthost-sim",
        retry=RetryPolicy(max_retries=0),
        transport=transport,
        lean=path == "lean",
    )
    assert llm.requests.name == path, f"the {path} request path is not available here"
    rows: dict[str, dict[str, float]] = {}
    try:
        for mode in MODES:
            # Warm-up: connections, imports and the SDK's caches are made here, not measured.
            warm_errors = await drive(llm, mode, args.warmup, args.concurrency, messages, expected)
            gc.collect()
            sim_before = cpu_seconds(sim_pid)
            cpu_before = time.process_time()
            started = time.perf_counter()
            errors = await drive(llm, mode, args.requests, args.concurrency, messages, expected)
            wall = time.perf_counter() - started
            cpu = time.process_time() - cpu_before
            sim_cpu = cpu_seconds(sim_pid) - sim_before
            rows[mode] = {
                "cpu_ms_per_request": round(cpu * 1000 / args.requests, 4),
                "requests_per_s": round(args.requests / wall, 1),
                "sim_cpu_ms_per_request": round(sim_cpu * 1000 / args.requests, 4),
                "errors": errors + warm_errors,
            }
    finally:
        await llm.close()
    return rows


def median_row(
    transport: str, path: str, mode: str, runs: list[dict[str, float]]
) -> dict[str, Any]:
    def med(key: str) -> float:
        return round(statistics.median(r[key] for r in runs), 4)

    cpu = [r["cpu_ms_per_request"] for r in runs]
    return {
        "transport": transport,
        "requests": path,
        "mode": mode,
        "cpu_ms_per_request": med("cpu_ms_per_request"),
        "cpu_ms_per_request_min": min(cpu),
        "cpu_ms_per_request_max": max(cpu),
        "requests_per_s": med("requests_per_s"),
        "sim_cpu_ms_per_request": med("sim_cpu_ms_per_request"),
        "errors": int(sum(r["errors"] for r in runs)),
        "runs": runs,
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per mode: the cheaper transport, by how much, and whether the runs' ranges overlap
    (if they do, the difference is within the noise of this machine)."""
    summary: dict[str, Any] = {}
    for mode in MODES:
        by = {r["transport"]: r for r in rows if r["mode"] == mode and r["requests"] == "lean"}
        if len(by) < 2:
            continue
        cheap, dear = sorted(by.values(), key=lambda r: r["cpu_ms_per_request"])[:2]
        summary[mode] = {
            "cheaper": cheap["transport"],
            "ratio": round(dear["cpu_ms_per_request"] / cheap["cpu_ms_per_request"], 2),
            "saved_ms_per_request": round(
                dear["cpu_ms_per_request"] - cheap["cpu_ms_per_request"], 4
            ),
            "beyond_noise": cheap["cpu_ms_per_request_max"] < dear["cpu_ms_per_request_min"],
        }
    return summary


def lean_against_typed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per transport and mode: what the SDK's own request building (typed) costs over the
    lean path, and whether the lean path meets issue 21's targets."""
    out = []
    for lean in (r for r in rows if r["requests"] == "lean"):
        typed = next(
            (
                r
                for r in rows
                if r["requests"] == "typed"
                and r["transport"] == lean["transport"]
                and r["mode"] == lean["mode"]
            ),
            None,
        )
        target = TARGET_MS[lean["mode"]]
        out.append(
            {
                "transport": lean["transport"],
                "mode": lean["mode"],
                "lean_cpu_ms": lean["cpu_ms_per_request"],
                "typed_cpu_ms": None if typed is None else typed["cpu_ms_per_request"],
                "typed_over_lean": None
                if typed is None
                else round(typed["cpu_ms_per_request"] / lean["cpu_ms_per_request"], 2),
                "target_ms": target,
                "meets_target": lean["cpu_ms_per_request"] <= target,
            }
        )
    return out


async def run_all(
    transports: list[LLMTransport],
    paths: list[str],
    base_url: str,
    sim_pid: int,
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    messages = prompts(PROMPTS)
    expected = [answer_for(m, args.words) for m in messages]
    runs: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    variants = list(itertools.product(transports, paths))
    for repeat in range(args.repeats):
        # Alternating order: no variant always runs first (or right after another).
        order = variants if repeat % 2 == 0 else variants[::-1]
        for transport, path in order:
            measured = await measure(transport, path, base_url, sim_pid, args, messages, expected)
            for mode, row in measured.items():
                runs.setdefault((transport, path, mode), []).append(row)
    return [
        median_row(t, p, m, runs[(t, p, m)]) for (t, p), m in itertools.product(variants, MODES)
    ]


def versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in ("openai", "aiohttp", "httpx2")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transports", default=",".join(LLM_TRANSPORTS))
    parser.add_argument(
        "--paths",
        default=",".join(PATHS),
        help="request paths: lean (the SDK's post, a msgspec body), typed (chat.completions)",
    )
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per row")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured requests first")
    parser.add_argument("--repeats", type=int, default=3, help="runs; the median is reported")
    parser.add_argument(
        "--words", type=int, default=45, help="words the simulator adds to each answer"
    )
    parser.add_argument("--tokens-per-s", type=float, default=2000, help="the stream's pace")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    transports: list[LLMTransport] = []
    for name in (t.strip() for t in args.transports.split(",") if t.strip()):
        if name not in LLM_TRANSPORTS:
            parser.error(f"unknown transport {name!r}: expected {', '.join(LLM_TRANSPORTS)}")
        transports.append(name)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not paths or any(p not in PATHS for p in paths):
        parser.error(f"--paths: a comma-separated choice of {', '.join(PATHS)}")
    if min(args.requests, args.concurrency, args.repeats) < 1 or args.warmup < 0:
        parser.error("--requests, --concurrency and --repeats must be >= 1, --warmup >= 0")

    port = free_port()
    sim_flags = ["--latency-ms", "0", "--ttft-ms", "0", "--tokens-per-s", str(args.tokens_per_s),
                 "--words", str(args.words)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHOST_")}
    load_before = os.getloadavg()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-llm-transport-") as tmp:
        log = Path(tmp) / "llm-sim.log"
        command = [AGENTHOST, "llm-sim", "--host", "127.0.0.1", "--port", str(port), *sim_flags]
        with process(command, log, env) as sim:
            wait_http(f"http://127.0.0.1:{port}/healthz", sim, log)
            base_url = f"http://127.0.0.1:{port}/v1"
            # The client runs on uvloop, as `agenthost serve` does.
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                rows = runner.run(run_all(transports, paths, base_url, sim.pid, args))
    tokens = len(split_tokens(answer_for(prompts(1)[0], args.words)))
    result = {
        **result_header("llm_transport"),
        "versions": versions(),
        "load_average_1m": {
            "before": round(load_before[0], 2),
            "after": round(os.getloadavg()[0], 2),
        },
        "seconds": round(time.monotonic() - started, 1),
        "params": {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "tokens_per_stream": tokens,
            "llm_sim": "agenthost llm-sim " + " ".join(sim_flags),
            "loop": "uvloop",
        },
        # What `--llm-transport` defaults to in the code measured, next to what measured cheaper.
        "default_transport": DEFAULT_LLM_TRANSPORT,
        "errors_total": sum(r["errors"] for r in rows),
        "results": rows,
        "summary": summarize(rows),
        "lean_against_typed": lean_against_typed(rows),
    }
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    if result["errors_total"]:
        print(f"llm_transport: {result['errors_total']} failed requests", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
