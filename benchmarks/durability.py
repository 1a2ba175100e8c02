"""A durability run on PostgreSQL: `agenthost loadtest` of N sessions x T streamed turns
against a server whose store is a PostgreSQL and whose stream broker is a redis-server with
no persistence; in the middle of the run the redis-server is killed (SIGKILL) and started
again empty on the same port. The loadtest's verifier then reads every history back and
counts lost, duplicated, reordered and mismatched turns: with PostgreSQL as the system of
record, losing Redis must lose no acknowledged turn. Prints one JSON object.

With `--cache`, the same redis-server is also the session cache in front of PostgreSQL
(`--cache redis://...`: windows, metadata and answers served from Redis; the server runs
with `--window-cache-mb 0`, so every begin reads the cache rather than the process's own
window): its loss then empties the cache too, and the next turn of each session reads
PostgreSQL. The result
tells how the server's turns were served (`agenthost_session_cache_requests_total`).

    python benchmarks/durability.py --sessions 500 --turns 5 \
        --json benchmarks/results/durability.json
    python benchmarks/durability.py --cache --sessions 500 --turns 5 --json OUT.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from turn_cpu import (
    AGENTHOST,
    free_port,
    postgres_server,
    process,
    psql,
    result_header,
    wait_http,
    wait_redis,
)


@contextlib.contextmanager
def killable_redis(workdir: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    log = workdir / f"redis-{port}-{time.monotonic_ns()}.log"
    args = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
            "--appendonly", "no", "--dir", str(workdir)]  # fmt: skip
    with process(args, log) as proc:
        wait_redis(port, proc, log)
        yield proc


def committed(url: str) -> int:
    return int(psql(url, "SELECT count(*) FROM agenthost_turns WHERE status = 'completed'"))


def cache_counts(base: str) -> dict[str, int]:
    """The server's turn begins by how the session cache served them."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    found = re.findall(r'agenthost_session_cache_requests_total\{result="(\w+)"\} (\d+)', text)
    return {result: int(count) for result, count in found}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--mode", default="sse", choices=["http", "sse", "ws"])
    parser.add_argument("--llm", default="sim://?latency_ms=300")
    parser.add_argument(
        "--cache", action="store_true", help="the redis-server is the session cache too"
    )
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    total = args.sessions * args.turns
    with (
        tempfile.TemporaryDirectory(prefix="bench-durability-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        pg_url, _ = stack.enter_context(postgres_server(workdir))
        redis_port = free_port()
        redis = stack.enter_context(killable_redis(workdir, redis_port))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHOST_")}
        log = workdir / "server.log"
        server = stack.enter_context(
            process(
                [AGENTHOST, "serve", "--port", str(port), "--store", pg_url,
                 "--broker", f"redis://127.0.0.1:{redis_port}/0", "--llm", args.llm,
                 "--allow-no-auth", "--log-level", "warning",
                 # No window cache in the process: with one, a session's begins on its own
                 # process skip Redis (`local`), and the run would not lean on the cache.
                 *(["--cache", f"redis://127.0.0.1:{redis_port}/0", "--window-cache-mb", "0"]
                   if args.cache else [])],
                log,
                env,
            )
        )  # fmt: skip
        wait_http(f"http://127.0.0.1:{port}/readyz", server, log)
        report_path = workdir / "loadtest.json"
        loadtest = subprocess.Popen(
            [AGENTHOST, "loadtest", "--url", f"http://127.0.0.1:{port}", "--mode", args.mode,
             "--sessions", str(args.sessions), "--turns", str(args.turns), "--ramp", "2",
             "--json", str(report_path), "--quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while committed(pg_url) < total // 2:
            if loadtest.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the loadtest ended before the middle of the run")
            time.sleep(0.1)
        at_kill = committed(pg_url)
        redis.send_signal(signal.SIGKILL)
        redis.wait(10)
        stack.enter_context(killable_redis(workdir, redis_port))  # empty: no persistence
        loadtest.wait(600)
        report: dict[str, Any] = json.loads(report_path.read_text())
        in_postgres = committed(pg_url)
        served = cache_counts(f"http://127.0.0.1:{port}") if args.cache else None
    verification = report["verification"]
    result = {
        **result_header("durability"),
        "params": {
            "sessions": args.sessions,
            "turns": args.turns,
            "mode": args.mode,
            "llm": args.llm,
            "store": "postgresql://… (our own PostgreSQL, default durability)",
            "broker": "redis://… (no persistence; SIGKILLed and restarted empty mid-run)",
            "cache": "the broker's redis-server" if args.cache else None,
        },
        "committed_when_redis_was_killed": at_kill,
        "committed_in_postgres_at_end": in_postgres,
        "answered": report["answered"],
        "sent": report["sent"],
        "failed": report["failed"],
        "retries": report["retries"],
        "verification": verification,
        **({} if served is None else {"session_cache": served}),
        "clean": not any(
            verification[k]
            for k in ("lost", "duplicated", "out_of_order", "mismatched", "unreadable")
        ),
        "loadtest_exit": loadtest.returncode,
    }
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    if not result["clean"]:
        print("durability: the verifier found damage", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
