"""A small closed-loop load generator, run as its own process so its CPU is not the server's.

`python benchmarks/loadgen.py --url URL --kind agenthost|baseline --sessions N --turns T
--concurrency C [--prefill H]` prints one JSON object: turns answered, errors, seconds.
Sessions are named `<prefix>-<i>`; `--prefill H` first gives each session H messages.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
import uuid

import aiohttp


async def turn(
    http: aiohttp.ClientSession, url: str, kind: str, session_id: str, message: str
) -> bool:
    if kind == "agenthost":
        target = f"{url}/v1/sessions/{session_id}/turns"
        headers = {"Idempotency-Key": uuid.uuid4().hex}
    else:
        target = f"{url}/chat/{session_id}"
        headers = {}
    async with http.post(target, json={"message": message}, headers=headers) as resp:
        await resp.read()
        return resp.status == 200


async def drive(args: argparse.Namespace) -> dict[str, object]:
    sessions = [f"{args.prefix}-{i}" for i in range(args.sessions)]
    connector = aiohttp.TCPConnector(limit=args.concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as http:
        if args.prefill:
            # Turns of one session must not overlap (the baseline would lose them).
            async def prefill(sid: str) -> None:
                for i in range(args.prefill // 2):
                    await turn(http, args.url, args.kind, sid, f"prefill {i} of {sid}")

            sem = asyncio.Semaphore(args.concurrency)

            async def bounded(sid: str) -> None:
                async with sem:
                    await prefill(sid)

            await asyncio.gather(*(bounded(s) for s in sessions))
            if args.prefill_only:
                return {"prefilled": len(sessions)}

        answered = errors = 0
        budget = iter(range(args.turns))
        # Each worker owns distinct sessions in turn, so no two turns of a session overlap.
        per_worker = [sessions[w :: args.concurrency] for w in range(args.concurrency)]

        async def worker(own: list[str]) -> None:
            nonlocal answered, errors
            if not own:
                return
            for sid in itertools.cycle(own):
                if next(budget, None) is None:
                    return
                try:
                    ok = await turn(http, args.url, args.kind, sid, f"hello from {sid}")
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    answered += 1
                else:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(own) for own in per_worker))
        elapsed = time.perf_counter() - t0
    return {"answered": answered, "errors": errors, "seconds": round(elapsed, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--kind", choices=["agenthost", "baseline"], default="agenthost")
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--prefill", type=int, default=0)
    parser.add_argument("--prefill-only", action="store_true")
    parser.add_argument("--prefix", default="bench")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(drive(args))))


if __name__ == "__main__":
    main()
