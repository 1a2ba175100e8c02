"""A small closed-loop load generator, run as its own process so its CPU is not the server's.

`python benchmarks/loadgen.py --url URL --kind agenthost|baseline --sessions N --turns T
--concurrency C [--prefill H]` prints one JSON object: turns answered, errors, seconds.
Sessions are named `<prefix>-<i>`; `--prefill H` first gives each session H messages.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import math
import time
import uuid
from typing import Any

import aiohttp

BEARER: dict[str, str] = {}  # Authorization header for every request, if --bearer is given


async def turn(
    http: aiohttp.ClientSession, url: str, kind: str, session_id: str, message: str
) -> int:
    """Send one turn; return the HTTP status (0 when the request itself failed)."""
    if kind == "agenthost":
        target = f"{url}/v1/sessions/{session_id}/turns"
        headers = {"Idempotency-Key": uuid.uuid4().hex, **BEARER}
    else:
        target = f"{url}/chat/{session_id}"
        headers = {}
    try:
        async with http.post(target, json={"message": message}, headers=headers) as resp:
            await resp.read()
            return resp.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


def pad(text: str, size: int) -> str:
    """`text`, padded with words to `size` bytes (unchanged if already as long)."""
    if len(text) >= size:
        return text
    filler = " lorem" * (size // 6 + 1)
    return (text + filler)[:size]


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    sessions = [f"{args.prefix}-{i}" for i in range(args.sessions)]
    # Each worker owns distinct sessions, so no two turns of one session ever overlap: the
    # baseline would silently lose one of them, and agenthost would queue it.
    per_worker = [sessions[w :: args.concurrency] for w in range(args.concurrency)]
    connector = aiohttp.TCPConnector(limit=args.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    deadline = time.monotonic() + args.max_seconds
    statuses: collections.Counter[int] = collections.Counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        if args.prefill:
            # A turn adds two messages; round up so every session holds at least H.
            prefill_turns = math.ceil(args.prefill / 2)

            async def prefill(own: list[str]) -> None:
                for sid in own:
                    for i in range(prefill_turns):
                        if time.monotonic() > deadline:
                            return
                        text = pad(f"prefill {i} {sid}", args.message_bytes)
                        status = await turn(http, args.url, args.kind, sid, text)
                        statuses[status] += 1

            await asyncio.gather(*(prefill(own) for own in per_worker))
            prefill_errors = sum(n for s, n in statuses.items() if s != 200)
            if args.prefill_only:
                return {
                    "prefilled_sessions": len(sessions),
                    "history_messages": 2 * prefill_turns,
                    "answered": statuses[200],
                    "errors": prefill_errors,
                    "statuses": {str(s): n for s, n in statuses.items()},
                    "timed_out": time.monotonic() > deadline,
                }

        budget = iter(range(args.turns))

        async def worker(own: list[str]) -> None:
            if not own:
                return
            for sid in itertools.cycle(own):
                if next(budget, None) is None or time.monotonic() > deadline:
                    return
                text = pad(f"hello from {sid}", args.message_bytes)
                statuses[await turn(http, args.url, args.kind, sid, text)] += 1

        statuses.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(own) for own in per_worker))
        elapsed = time.perf_counter() - t0
    return {
        "answered": statuses[200],
        "errors": sum(n for s, n in statuses.items() if s != 200),
        "statuses": {str(s): n for s, n in statuses.items()},
        "seconds": round(elapsed, 3),
        "timed_out": time.monotonic() > deadline,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--kind", choices=["agenthost", "baseline"], default="agenthost")
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--prefill", type=int, default=0, help="messages per session first")
    parser.add_argument("--prefill-only", action="store_true")
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--max-seconds", type=float, default=300, help="stop after this long")
    parser.add_argument("--request-timeout", type=float, default=30)
    parser.add_argument(
        "--message-bytes", type=int, default=0, help="pad each message to this many bytes"
    )
    parser.add_argument("--bearer", help="API key or token sent as Authorization: Bearer")
    args = parser.parse_args()
    if args.bearer:
        BEARER["Authorization"] = f"Bearer {args.bearer}"
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(drive(args))))


if __name__ == "__main__":
    main()
