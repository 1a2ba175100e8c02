"""PostgreSQL's CPU per turn for each step of a turn, begin and commit, by batch size.

Runs the PostgreSQL store in this process against a PostgreSQL of its own (turn_cpu's:
initdb into a temporary directory, a free loopback port, default durability), gives B
sessions a turn each per round, the B begins submitted together (so they go as one batch
statement, `agenthost_begin_many`) and then the B commits, and charges the CPU the
PostgreSQL backends spent in each phase (process CPU clocks) to its step. With `--known`
(the default) every begin carries the session's mark, as a warm begin with the cache or
the process's window cache does, so PostgreSQL builds no window. No agenthost server, no
HTTP: only what PostgreSQL spends on each step.

For each step, a least-squares line over the batch sizes splits its cost into a part per
statement (the function call, its transaction, the commit record's WAL flush, the
backend's wake-up) and a part per turn (the rows it locks, reads and writes). The commit
step's line is what any design keeps in PostgreSQL while PostgreSQL is the system of record
(issue 16: a begin served by Redis alone would leave exactly that step).

    python benchmarks/pg_steps.py --batches 1,4,16,64 --turns 3000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from agenthost.stores.base import Message, Started, WindowMark
from agenthost.stores.postgres import PostgresStore
from turn_cpu import postgres_server, process_cpu_clock, result_header


def backend_pids(postmaster: int) -> tuple[list[int], list[int]]:
    """The client backends (whose command line names the client's address) and the
    background processes (WAL writer, checkpointer, autovacuum, ...) under `postmaster`."""
    clients: list[int] = []
    others: list[int] = []
    for child in psutil.Process(postmaster).children(recursive=True):
        try:
            title = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        (clients if "127.0.0.1(" in title else others).append(child.pid)
    return clients, others


def cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        clock = process_cpu_clock(pid)
        if clock is None:
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.NoSuchProcess:
                continue
            clock = times.user + times.system
        total += clock
    return total


class Steps:
    """B sessions of the store, turned in rounds: all begins together, then all commits."""

    def __init__(self, store: PostgresStore, batch: int, args: argparse.Namespace) -> None:
        self.store = store
        self.sessions = [f"b{batch}-{i}" for i in range(batch)]
        self.args = args
        self.text = "x" * args.message_bytes if args.message_bytes else "hello there"
        self.marks: dict[str, WindowMark] = {}
        self.round = 0

    async def begins(self) -> list[Started]:
        self.round += 1
        results = await asyncio.gather(
            *(
                self.store.begin_turn(
                    sid,
                    f"t{self.round}",
                    self.text,
                    metadata_patch=None,
                    lease_ms=30_000,
                    window=self.args.history_window,
                    ttl_s=math.inf,
                    known=self.marks.get(sid) if self.args.known else None,
                )
                for sid in self.sessions
            )
        )
        started = [r for r in results if isinstance(r, Started)]
        if len(started) != len(results):
            raise RuntimeError(f"a begin did not start: {results}")
        return started

    async def commits(self, started: list[Started]) -> None:
        async def one(st: Started) -> None:
            now, n, tid = time.time(), st.message_count, st.lease.turn_id
            await self.store.commit_turn(
                st.lease,
                user=Message("user", self.text, tid, now, n),
                assistant=Message("assistant", self.text, tid, now, n + 1),
                metadata={},
                ttl_s=math.inf,
            )
            self.marks[st.lease.session_id] = WindowMark(st.created_at, n + 2)

        await asyncio.gather(*(one(st) for st in started))


async def measure_batch(
    store: PostgresStore, postmaster: int, batch: int, args: argparse.Namespace
) -> dict[str, Any]:
    steps = Steps(store, batch, args)
    for _ in range(args.warmup_rounds):  # sessions created, connections opened, plans cached
        await steps.commits(await steps.begins())
    clients, others = backend_pids(postmaster)
    rounds = max(1, math.ceil(args.turns / batch))
    spent = {"begin": 0.0, "commit": 0.0}
    background = cpu(others)
    sent_before = sum(sum(b.sizes.values()) for b in store.batchers.values())
    for _ in range(rounds):
        t0 = cpu(clients)
        started = await steps.begins()
        t1 = cpu(clients)
        await steps.commits(started)
        spent["begin"] += t1 - t0
        spent["commit"] += cpu(clients) - t1
    background = cpu(others) - background
    turns = rounds * batch
    statements = sum(sum(b.sizes.values()) for b in store.batchers.values()) - sent_before
    return {
        "batch": batch,
        "turns": turns,
        "begin_ms_per_turn": round(spent["begin"] / turns * 1000, 4),
        "commit_ms_per_turn": round(spent["commit"] / turns * 1000, 4),
        # WAL writer, checkpointer, autovacuum: not charged to either step.
        "background_ms_per_turn": round(background / turns * 1000, 4),
        "statements_per_turn": round(statements / turns, 4),
    }


def fit(rows: list[dict[str, Any]], key: str) -> dict[str, float] | None:
    """cost per turn = per_turn + per_statement / batch, least squares over the batches."""
    if len({r["batch"] for r in rows}) < 2:
        return None
    xs = [1 / r["batch"] for r in rows]
    ys = [r[key] for r in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return {"per_statement_ms": round(slope, 4), "per_turn_ms": round(my - slope * mx, 4)}


async def run(url: str, postmaster: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    # batch_min=1: a lone step goes through the batch function too, so every point measures
    # the same functions.
    store = PostgresStore(f"{url}?batch_min=1")
    await store.open()
    try:
        rows = []
        for batch in args.batches:
            rows.append(await measure_batch(store, postmaster, batch, args))
            print(json.dumps(rows[-1]), file=sys.stderr)
        return rows
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", default="1,4,16,64", help="turns per batch statement")
    parser.add_argument("--turns", type=int, default=3000, help="measured turns per batch size")
    parser.add_argument("--warmup-rounds", type=int, default=20)
    parser.add_argument("--history-window", type=int, default=50)
    parser.add_argument(
        "--no-known",
        dest="known",
        action="store_false",
        help="begin without the window's mark, so PostgreSQL builds the window every turn",
    )
    parser.add_argument(
        "--message-bytes", type=int, default=0, help="pad each message to this many bytes"
    )
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="bench-pg-steps-") as tmp,
        postgres_server(Path(tmp)) as (url, pids),
    ):
        rows = asyncio.run(run(url, pids[0], args))
    result = {
        **result_header("pg_steps"),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "seconds": round(time.monotonic() - started, 1),
        "params": {
            "batches": args.batches,
            "turns": args.turns,
            "history_window": args.history_window,
            "known": args.known,
            "message_bytes": args.message_bytes,
        },
        "results": rows,
        "fit": {step: fit(rows, f"{step}_ms_per_turn") for step in ("begin", "commit")},
    }
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
