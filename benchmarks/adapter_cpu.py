"""CPU per streamed turn through each client protocol adapter, beside the native SSE endpoint
in the same run.

It starts one agenthost (memory store, the simulator streaming `--words` words a turn at
`--tokens-per-s`, coalescing off so every token is an event) and drives `--turns` streamed
turns per protocol from this process (aiohttp, `--concurrency` sessions each sending its
turns one after another), reading every stream to its end marker. The server's process CPU
over a batch divided by the turns answered is the figure; the protocols take turns batch by
batch, `--repeats` rounds, and each row is the median of its rounds. `ratio` is the median,
over the rounds, of a protocol's figure over the native endpoint's in the same round (the
issue's target: at most 1.2), so drift on a shared machine between rounds cancels out.
Prints one JSON object (also written to `--json FILE`).

    python benchmarks/adapter_cpu.py --turns 2000 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from turn_cpu import AGENTHOST, cpu_seconds, free_port, process, result_header, wait_http

TARGET_RATIO = 1.2

Request = tuple[str, dict[str, Any], dict[str, str]]
"""(path, JSON body, headers) of one streamed turn."""


def native(sid: str, n: int) -> Request:
    return f"/v1/sessions/{sid}/turns", {"message": f"m{n}", "stream": True}, {}


def openai_chat(sid: str, n: int) -> Request:
    body = {
        "model": "agenthost",
        "stream": True,
        "messages": [{"role": "user", "content": f"m{n}"}],
    }
    return "/openai/v1/chat/completions", body, {"X-Session-Id": sid, "Idempotency-Key": f"k{n}"}


def openai_responses(sid: str, n: int) -> Request:
    return "/openai/v1/responses", {"input": f"m{n}", "conversation": sid, "stream": True}, {}


def ai_sdk(sid: str, n: int) -> Request:
    message = {"id": f"u{n}", "role": "user", "parts": [{"type": "text", "text": f"m{n}"}]}
    return "/ai-sdk/v1/chat", {"id": sid, "messages": [message], "trigger": "submit-message"}, {}


def ag_ui(sid: str, n: int) -> Request:
    message = {"id": f"u{n}", "role": "user", "content": f"m{n}"}
    return "/ag-ui/v1/run", {"threadId": sid, "runId": f"r{n}", "messages": [message]}, {}


PROTOCOLS: dict[str, tuple[Callable[[str, int], Request], bytes]] = {
    "native": (native, b"event: done"),
    "openai_chat": (openai_chat, b"data: [DONE]"),
    "openai_responses": (openai_responses, b"response.completed"),
    "ai_sdk": (ai_sdk, b"data: [DONE]"),
    "ag_ui": (ag_ui, b"RUN_FINISHED"),
}


async def batch(
    http: aiohttp.ClientSession, base: str, protocol: str, turns: int, concurrency: int
) -> tuple[int, int]:
    """Run `turns` streamed turns; (answered, errors)."""
    build, marker = PROTOCOLS[protocol]
    per_worker = turns // concurrency
    answered = errors = 0

    async def worker() -> None:
        nonlocal answered, errors
        sid = f"{protocol}-{uuid.uuid4().hex[:12]}"
        for n in range(per_worker):
            path, body, headers = build(sid, n)
            async with http.post(base + path, json=body, headers=headers) as resp:
                text = await resp.read()
                if resp.status == 200 and marker in text:
                    answered += 1
                else:
                    errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answered, errors


async def drive(base: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    protocols = [p.strip() for p in args.protocols.split(",")]
    samples: dict[str, list[float]] = {p: [] for p in protocols}
    errors: dict[str, int] = dict.fromkeys(protocols, 0)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        for protocol in protocols:  # warm every path once
            await batch(http, base, protocol, args.concurrency * 2, args.concurrency)
        for _ in range(args.repeats):
            for protocol in protocols:
                before = cpu_seconds(pid)
                answered, failed = await batch(http, base, protocol, args.turns, args.concurrency)
                used = cpu_seconds(pid) - before
                errors[protocol] += failed
                samples[protocol].append(used * 1000 / max(answered, 1))
    native_ms = samples.get("native")
    rows = []
    for protocol in protocols:
        ms = statistics.median(samples[protocol])
        ratio = (
            statistics.median(s / n for s, n in zip(samples[protocol], native_ms, strict=True))
            if native_ms
            else None
        )
        rows.append(
            {
                "protocol": protocol,
                "cpu_ms_per_turn": round(ms, 4),
                "ratio": None if ratio is None else round(ratio, 3),
                "samples_ms": [round(s, 4) for s in samples[protocol]],
                "errors": errors[protocol],
            }
        )
    return {"results": rows, "errors_total": sum(errors.values())}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--turns", type=int, default=2000, help="turns per protocol per round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--words", type=int, default=20)
    parser.add_argument("--tokens-per-s", type=float, default=2000.0)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "agenthost.log"
        env = {
            "AGENTHOST_PORT": str(port),
            "AGENTHOST_STORE": "memory://",
            "AGENTHOST_LLM": f"sim://?words={args.words}&tokens_per_s={args.tokens_per_s:g}",
            "AGENTHOST_CHUNK_COALESCE_MS": "0",
            "AGENTHOST_ACCESS_LOG": "false",
            "AGENTHOST_LOG_LEVEL": "warning",
            "PATH": "/usr/bin:/bin",
        }
        with process([AGENTHOST, "serve"], log, env) as proc:
            base = f"http://127.0.0.1:{port}"
            wait_http(base + "/readyz", proc, log)
            measured = asyncio.run(drive(base, proc.pid, args))
    result = {
        **result_header("adapter_cpu"),
        "settings": {
            "turns": args.turns,
            "repeats": args.repeats,
            "concurrency": args.concurrency,
            "llm": f"sim://?words={args.words}&tokens_per_s={args.tokens_per_s:g}",
            "chunk_coalesce_ms": 0,
            "store": "memory://",
        },
        "target_ratio": TARGET_RATIO,
        **measured,
    }
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    sys.exit(1 if measured["errors_total"] else 0)


if __name__ == "__main__":
    main()
