"""Idle WebSockets on one process: how much memory does an open connection cost the server?

Starts one `agenthost serve` process (embedded SQLite store, `sim://`), opens and closes a
few connections so that first-use allocations are not charged to the measured ones, reads
its memory (RSS, and USS: the pages only this process holds), then opens `--connections`
WebSockets to `/v1/sessions/{sid}/ws` (one session each) from `--clients` load-client
processes, waits until the server counts them all and its memory is steady, and reads it
again. Reports KB per connection, then the same after one turn on every connection.

With `--profile`, the server runs under tracemalloc and the report adds the source lines
that allocated the most per connection (Python allocations only; RSS also holds the
allocator's slack and C allocations such as the event loop's per-socket state).
`--ws-impl` runs the server with another of uvicorn's WebSocket implementations, to compare.

    python benchmarks/idle_websockets.py --connections 10000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from pathlib import Path
from typing import IO, Any

import psutil

from stream_gaps import StreamRecord, WebSocketClient, raise_open_files_limit
from turn_cpu import free_port, process, redis_server, result_header, wait_http

ROOT = Path(__file__).resolve().parent.parent
AGENTHOST = str(Path(sys.executable).with_name("agenthost"))
# The bar: 10,000 idle WebSockets on one process at <= 20 KB each.
TARGET_KB_PER_CONNECTION = 20.0
LLM = "sim://?words=8"
WARMUP_CONNECTIONS = 100
# Handshakes in flight per client process: well inside the server's listen backlog.
OPENING_AT_ONCE = 200


# -- a load-client process: opens its share, then obeys "turn" / "close" on stdin -------------


async def hold_connections(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    cpu_before = time.process_time()
    wall_before = time.monotonic()
    gate = asyncio.Semaphore(OPENING_AT_ONCE)
    clients: list[WebSocketClient] = []

    async def open_one(index: int) -> None:
        client = WebSocketClient(
            StreamRecord(), args.host, args.port, f"{args.prefix}-{index}", None
        )
        clients.append(client)
        async with gate:
            try:
                await loop.create_connection(lambda: client, args.host, args.port)
                await asyncio.wait_for(client.open, 30)
            except (OSError, TimeoutError) as exc:
                client.record.error = client.record.error or f"{type(exc).__name__}"

    def alive() -> list[WebSocketClient]:
        return [c for c in clients if c.record.error is None and not c.finished.done()]

    def report(**fields: Any) -> None:
        print(json.dumps(fields), flush=True)

    mine = range(args.worker, args.connections, args.workers)
    await asyncio.gather(*(open_one(i) for i in mine))
    report(event="open", open=len(alive()), failed=len(clients) - len(alive()))
    while command := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
        if command == "turn":
            started = alive()
            for client in started:
                client.send_turn(f"hello from {id(client)}")
            await asyncio.wait_for(asyncio.gather(*(c.turn_done for c in started)), 120)
            answered = sum(1 for c in started if c.record.done and c.record.error is None)
            report(event="turn", answered=answered, failed=len(started) - answered)
        elif command == "close":
            break
    still_open = len(alive())
    for client in clients:
        client.finish()
    report(
        event="closed",
        open_until_close=still_open,
        cpu_s=round(time.process_time() - cpu_before, 3),
        wall_s=round(time.monotonic() - wall_before, 3),
    )


def client_main(args: argparse.Namespace) -> None:
    raise_open_files_limit()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(hold_connections(args))


class ClientProcess:
    """A load-client process driven over its stdin/stdout, one JSON line per step."""

    def __init__(
        self, port: int, connections: int, workers: int, worker: int, prefix: str, deflate: bool
    ) -> None:
        argv = [sys.executable, __file__, "--client-worker", "--port", str(port),
                "--connections", str(connections), "--workers", str(workers),
                "--worker", str(worker), "--prefix", prefix]  # fmt: skip
        if deflate:
            argv.append("--deflate")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, text=True
        )

    def _io(self) -> tuple[IO[str], IO[str]]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        return self.proc.stdin, self.proc.stdout

    def tell(self, command: str) -> None:
        stdin, _ = self._io()
        stdin.write(command + "\n")
        stdin.flush()

    def read(self) -> dict[str, Any]:
        _, stdout = self._io()
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"load client exited with {self.proc.wait(10)}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> dict[str, Any]:
        self.tell("close")
        answer = self.read()
        self.proc.wait(30)
        return answer


# -- the server under measurement -------------------------------------------------------------


def serve_main(args: argparse.Namespace) -> None:
    """`agenthost serve` in this process, with a chosen uvicorn WebSocket implementation and,
    for --profile, tracemalloc: SIGUSR1 writes a snapshot to `<dir>/snapshot-<n>`."""
    if args.trace_dir:
        tracemalloc.start(args.trace_frames)
        taken = [0]

        def snapshot(signum: int, frame: Any) -> None:
            taken[0] += 1
            tracemalloc.take_snapshot().dump(f"{args.trace_dir}/snapshot-{taken[0]}")

        signal.signal(signal.SIGUSR1, snapshot)
    import uvicorn

    from agenthost.core.settings import Settings
    from agenthost.runtime import server

    if args.ws_impl != "default":  # else agenthost's own choice, as `agenthost serve` runs

        class ChosenWebSockets(uvicorn.Config):
            def __init__(self, *a: Any, **kw: Any) -> None:
                kw["ws"] = args.ws_impl
                super().__init__(*a, **kw)

        # runtime/server.py reads it from the module
        setattr(uvicorn, "Config", ChosenWebSockets)  # noqa: B010
    settings = Settings.from_env(
        port=args.port, store=args.store, llm=LLM, ws_idle_timeout=3600, log_level="warning"
    )
    server.run(settings)


def metric(url: str, name: str) -> float:
    """The family's value, summed over processes (`--workers` labels each one's)."""
    total = 0.0
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith((name + " ", name + "{")):
                total += float(line.rsplit(" ", 1)[1])
    return total


def memory(pid: int) -> dict[str, float]:
    """RSS and USS of `pid` and its children (the processes of `serve --workers N`)."""
    rss = uss = 0.0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            full = proc.memory_full_info()
            rss, uss = rss + full.rss, uss + full.uss
        except psutil.AccessDenied:
            rss, uss = rss + proc.memory_info().rss, float("nan")
        except psutil.NoSuchProcess:
            continue
    return {"rss": rss, "uss": uss}


def settled_memory(url: str, pid: int, connections: int, timeout: float) -> dict[str, float]:
    """Memory once the server counts `connections` open and its RSS stops moving."""
    deadline = time.monotonic() + timeout
    while metric(url, "agenthost_active_connections") != connections:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"server counts {metric(url, 'agenthost_active_connections')} connections, "
                f"expected {connections}"
            )
        time.sleep(0.1)
    last = memory(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = memory(pid)
        if abs(now["rss"] - last["rss"]) < 64 * 1024:
            return now
        last = now
    return last


def per_connection_kb(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, Any]:
    return {
        f"{kind}_kb_per_connection": round((after[kind] - before[kind]) / max(n, 1) / 1024, 2)
        for kind in ("rss", "uss")
    }


def top_allocations(trace_dir: Path, before: int, after: int, n: int) -> list[dict[str, Any]]:
    old = tracemalloc.Snapshot.load(str(trace_dir / f"snapshot-{before}"))
    new = tracemalloc.Snapshot.load(str(trace_dir / f"snapshot-{after}"))
    ignore = tracemalloc.Filter(False, tracemalloc.__file__)
    diff = new.filter_traces([ignore]).compare_to(old.filter_traces([ignore]), "lineno")
    rows = []
    total = sum(d.size_diff for d in diff)
    for d in diff[:15]:
        frame = d.traceback[0]
        where = frame.filename.split("site-packages/")[-1].split("/src/")[-1]
        rows.append(
            {
                "where": f"{where}:{frame.lineno}",
                "bytes_per_connection": round(d.size_diff / max(n, 1)),
                "blocks_per_connection": round(d.count_diff / max(n, 1), 2),
            }
        )
    rows.append({"where": "total traced", "bytes_per_connection": round(total / max(n, 1))})
    by_file = new.filter_traces([ignore]).compare_to(old.filter_traces([ignore]), "filename")
    for d in by_file[:8]:
        where = d.traceback[0].filename.split("site-packages/")[-1].split("/src/")[-1]
        rows.append({"file": where, "bytes_per_connection": round(d.size_diff / max(n, 1))})
    return rows


def measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    store = f"sqlite:///{tmp / 'idle.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHOST_")}
    trace_dir = tmp / "trace"
    if args.profile or args.ws_impl != "default":
        trace_dir.mkdir()
        impl = args.ws_impl
        server_args = [sys.executable, __file__, "--serve", "--port", str(port),
                       "--store", store, "--ws-impl", impl]  # fmt: skip
        if args.profile:
            server_args += ["--trace-dir", str(trace_dir)]
    else:
        server_args = [AGENTHOST, "serve", "--port", str(port), "--store", store, "--llm", LLM,
                       "--ws-idle-timeout", "3600", "--log-level", "warning"]  # fmt: skip
    log = tmp / "server.log"
    n = args.connections
    with contextlib.ExitStack() as stack:
        if args.server_processes > 1:  # processes need a store they share
            store, _ = stack.enter_context(redis_server(tmp))
            server_args[server_args.index("--store") + 1] = store
            server_args += ["--workers", str(args.server_processes), "--allow-no-auth"]
        result = _measure_server(args, server_args, url, port, log, env, trace_dir, n)
    result["store"] = store.split("://")[0]
    result["server_processes"] = args.server_processes
    return result


def _measure_server(
    args: argparse.Namespace,
    server_args: list[str],
    url: str,
    port: int,
    log: Path,
    env: dict[str, str],
    trace_dir: Path,
    n: int,
) -> dict[str, Any]:
    with process(server_args, log, env) as server:
        wait_http(url + "/readyz", server, log, timeout=60)
        start = memory(server.pid)
        # First use (imports, caches, the first handshake) is not a connection's cost.
        warm = ClientProcess(port, WARMUP_CONNECTIONS, 1, 0, "warm", args.deflate)
        warm.read()
        warm.tell("turn")
        warm.read()
        warm.close()
        before = settled_memory(url, server.pid, 0, 60)
        if args.profile:
            server.send_signal(signal.SIGUSR1)
        opened_at = time.monotonic()
        clients = [
            ClientProcess(port, n, args.clients, w, "idle", args.deflate)
            for w in range(args.clients)
        ]
        opened = [c.read() for c in clients]
        open_s = time.monotonic() - opened_at
        failed = sum(o["failed"] for o in opened)
        held = sum(o["open"] for o in opened)
        idle = settled_memory(url, server.pid, held, 120)
        if args.profile:
            server.send_signal(signal.SIGUSR1)
        load = os.getloadavg()[0]
        for c in clients:
            c.tell("turn")
        turned = [c.read() for c in clients]
        after_turn = settled_memory(url, server.pid, held, 120)
        if args.profile:
            server.send_signal(signal.SIGUSR1)
        closed = [c.close() for c in clients]
        alive = server.poll() is None
        if args.profile:
            deadline = time.monotonic() + 60
            while not (trace_dir / "snapshot-3").exists() and time.monotonic() < deadline:
                time.sleep(0.2)
    client_cpu = sum(c["cpu_s"] for c in closed)
    client_wall = max(c["wall_s"] for c in closed)
    idle_kb = per_connection_kb(before, idle, held)
    result: dict[str, Any] = {
        "connections": n,
        "opened": held,
        "failed_to_open": failed,
        "still_open_at_end": sum(c["open_until_close"] for c in closed),
        "open_s": round(open_s, 2),
        "server_alive": alive,
        "ws_impl": "agenthost's (lean sans-I/O)" if args.ws_impl == "default" else args.ws_impl,
        "permessage_deflate": args.deflate,
        "server_mb": {
            "rss_at_start": round(start["rss"] / 2**20, 1),
            "rss_before": round(before["rss"] / 2**20, 1),
            "uss_before": round(before["uss"] / 2**20, 1),
            "rss_idle": round(idle["rss"] / 2**20, 1),
            "uss_idle": round(idle["uss"] / 2**20, 1),
            "rss_after_turn": round(after_turn["rss"] / 2**20, 1),
            "uss_after_turn": round(after_turn["uss"] / 2**20, 1),
        },
        "idle": idle_kb,
        "after_one_turn_each": {
            **per_connection_kb(before, after_turn, held),
            "turns_answered": sum(t["answered"] for t in turned),
            "turns_failed": sum(t["failed"] for t in turned),
        },
        "meets_target": idle_kb["rss_kb_per_connection"] <= TARGET_KB_PER_CONNECTION,
        "client_processes": args.clients,
        "client_cpu_pct": round(100 * client_cpu / max(client_wall, 1e-9), 1),
        "load_average_1m": round(load, 2),
    }
    if args.profile:
        result["tracemalloc_idle"] = top_allocations(trace_dir, 1, 2, held)
        result["tracemalloc_turn"] = top_allocations(trace_dir, 2, 3, held)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=2, help="load-client processes")
    parser.add_argument("--profile", action="store_true", help="tracemalloc in the server")
    parser.add_argument(
        "--ws-impl",
        default="default",
        choices=["default", "websockets-sansio", "websockets", "wsproto"],
        help="uvicorn's WebSocket implementation (default: what agenthost serve uses)",
    )
    parser.add_argument(
        "--deflate",
        action="store_true",
        help="clients ask for permessage-deflate, as browsers do",
    )
    parser.add_argument(
        "--server-processes",
        type=int,
        default=1,
        help="agenthost serve --workers N (above 1: on a redis-server); memory is summed",
    )
    parser.add_argument("--json", type=Path, help="also write the result here")
    # Internal: a load-client process, or the server run by this script.
    parser.add_argument("--client-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="idle", help=argparse.SUPPRESS)
    parser.add_argument("--store", default="memory://", help=argparse.SUPPRESS)
    parser.add_argument("--trace-dir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--trace-frames", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.server_processes > 1 and (args.profile or args.ws_impl != "default"):
        parser.error("--server-processes runs `agenthost serve --workers`: no --profile/--ws-impl")
    if args.client_worker:
        client_main(args)
        return
    if args.serve:
        serve_main(args)
        return
    raise_open_files_limit()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-idle-ws-") as tmp:
        row = measure(args, Path(tmp))
    result = {
        **result_header("idle_websockets"),
        "seconds": round(time.monotonic() - started, 1),
        "target_kb_per_connection": TARGET_KB_PER_CONNECTION,
        "results": [row],
    }
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
