"""CPU per answered turn: agenthost's stores against the reference design's sample server.

For each target it starts the server (and a redis-server where one is needed) on free
loopback ports, gives a set of sessions a history of H messages, then drives `--turns`
non-streaming turns from a separate load-generator process and divides the server's (and
redis-server's) process CPU by the turns answered. CPU time, unlike wall time, is stable on
a noisy machine. Prints one JSON object (also written to `--json FILE`).

    python benchmarks/turn_cpu.py --targets baseline,sqlite,redis --turns 3000
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
AGENTHOST = str(Path(PYTHON).with_name("agenthost"))
STORES = ("sqlite", "memory", "redis", "redis-tenant", "redis-cluster", "postgres")
# Each agenthost target also as `<target>-nocache`: the same server with --window-cache-mb 0,
# so the window cache's effect is measured in the same run (A/B). postgres+cache: PostgreSQL
# with a redis-server as its --cache (issue 16's hot tier).
TARGETS = ("baseline", *STORES, *(f"{t}-nocache" for t in STORES), "postgres+cache")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# Top-level statements PostgreSQL ran, read before and after each measured run: the figure
# "statements per turn" (pg_stat_statements; a server-side function call counts once).
STATEMENTS: dict[str, str] = {}  # base URL -> the database's URL
# redis-tenant: the Redis store with --auth keys and a key whose limits never bite (a rate of
# 10 million turns a minute, 100,000 in flight): what authentication and both limit checks
# add to a turn.
TENANT_LIMITS = ["--turns-per-minute", "10000000", "--max-inflight", "100000"]
BEARER: dict[str, str] = {}  # base URL -> the API key loadgen sends
# postgres+cache: PostgreSQL as the store with a redis-server as its --cache; the Redis
# process's share is told apart from PostgreSQL's.
CACHE_PIDS: dict[str, int] = {}  # base URL -> the cache's redis-server
# words=0: the simulator echoes the message, as the baseline's agent does, so both sides do
# the same agent work and the figure compares the servers, not the fake models.
LLM_URL = "sim://?words=0"
# Issue 3's targets for the Redis store: server + redis-server CPU per turn, and flatness.
TARGET_CPU_MS = 0.15
TARGET_FLATNESS = 1.1


class ServerDied(RuntimeError):
    """A server process under test exited or never answered; carries the tail of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerDied(f"{proc.args!r} exited with {proc.returncode}:\n{log_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise ServerDied(f"{url} did not answer within {timeout} s:\n{log_tail(log)}")


def process_cpu_clock(pid: int) -> float | None:
    """CPU seconds of every thread of `pid`, living or exited, at nanosecond resolution.

    Linux exposes each process's CPU clock by id (MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED));
    psutil's user + system come in 10 ms ticks, which at 3,000 turns is a 0.003 ms/turn error
    per reading: too coarse next to a 0.15 ms target.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        return time.clock_gettime(((~pid) << 3) | 2)
    except OSError:
        return None


def cpu_seconds(pid: int) -> float:
    """CPU of `pid` and its descendants, living (by clock) and reaped (by psutil's ticks)."""
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        clock = process_cpu_clock(p.pid)
        if clock is None:
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                continue  # exited since the listing; its parent's children_* has it now
            clock = t.user + t.system
        total += clock
    t = proc.cpu_times()
    return total + t.children_user + t.children_system


@contextlib.contextmanager
def process(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    # The log is kept so that a server that fails to start says why.
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def wait_redis(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            raise ServerDied(f"redis-server on {port} exited:\n{log_tail(log)}")
        ping = ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "ping"]
        if subprocess.run(ping, capture_output=True, text=True).stdout.strip() == "PONG":
            return
        if time.monotonic() > deadline:
            raise ServerDied(f"redis-server on {port} did not start:\n{log_tail(log)}")
        time.sleep(0.05)


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[tuple[str, list[int]]]:
    """Our own throw-away redis-server on a free loopback port, never the machine's."""
    port = free_port()
    log = workdir / f"redis-{port}.log"
    args = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
            "--appendonly", "no", "--dir", str(workdir)]  # fmt: skip
    with process(args, log) as proc:
        wait_redis(port, proc, log)
        yield f"redis://127.0.0.1:{port}/0", [proc.pid]


@contextlib.contextmanager
def postgres_server(workdir: Path) -> Iterator[tuple[str, list[int]]]:
    """Our own PostgreSQL (initdb into a temporary directory, as the postgres user, on a
    free loopback port), never the machine's; pg_stat_statements loaded to count
    statements. Default durability (fsync, synchronous_commit on)."""
    import pwd

    entry = pwd.getpwnam("postgres")
    os.chmod(workdir, 0o711)  # the postgres user must reach its directory inside
    root = workdir / "pg"
    root.mkdir()
    os.chown(root, entry.pw_uid, entry.pw_gid)
    subprocess.run(
        ["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(root / "data"),
         "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-locale"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    port = free_port()
    log = root / "postgres.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(PG_BIN / "postgres"), "-D", str(root / "data"), "-p", str(port), "-k", str(root),
             "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200",
             "-c", "shared_preload_libraries=pg_stat_statements"],
            stdout=out, stderr=subprocess.STDOUT, user=entry.pw_uid, group=entry.pw_gid,
            extra_groups=[], cwd=root,
        )  # fmt: skip
    try:
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        deadline = time.monotonic() + 30
        while subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", str(port)],
                             capture_output=True).returncode != 0:  # fmt: skip
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ServerDied(f"postgres did not start:\n{log_tail(log)}")
            time.sleep(0.1)
        psql(url, "CREATE EXTENSION pg_stat_statements")
        yield url, [proc.pid]
    finally:
        proc.send_signal(2)
        proc.wait(30)


def psql(url: str, statement: str) -> str:
    out = subprocess.run(["psql", "-X", "-A", "-t", "-c", statement, url],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.strip()


def statements_run(url: str) -> int:
    """Top-level statements run so far in the benchmark's database, by any client but psql,
    leaving out what a process runs by the clock whatever its turns: the fleet registry's
    heartbeat (every --heartbeat-interval) with its asyncpg pool's reset when the connection
    goes back (`RESET ALL`, `UNLISTEN *`, ...), and the listener's liveness `SELECT 1` (every
    5 s; pg_stat_statements keeps it as `SELECT $1`)."""
    return int(
        psql(
            url,
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_database d"
            " ON d.oid = s.dbid WHERE d.datname = current_database() AND s.toplevel"
            " AND s.query NOT LIKE '%pg_stat_statements%'"
            " AND s.query NOT LIKE '%agenthost_processes%'"
            " AND s.query NOT LIKE '%agenthost_autoscale%'"
            " AND s.query NOT IN ('SELECT 1', 'SELECT $1', 'RESET ALL', 'UNLISTEN *',"
            " 'CLOSE ALL', 'SELECT pg_advisory_unlock_all()')",
        )
    )


@contextlib.contextmanager
def redis_cluster(workdir: Path) -> Iterator[tuple[str, list[int]]]:
    """A 3-master Redis Cluster of our own, on free loopback ports (cluster bus = port + 10000)."""
    ports: list[int] = []
    while len(ports) < 3:
        p = free_port()
        if p + 10000 < 65536 and p not in ports:
            ports.append(p)
    with contextlib.ExitStack() as stack:
        pids = []
        for p in ports:
            d = workdir / f"node-{p}"
            d.mkdir()
            args = ["redis-server", "--bind", "127.0.0.1", "--port", str(p), "--save", "",
                    "--appendonly", "no", "--dir", str(d), "--cluster-enabled", "yes"]  # fmt: skip
            log = d / "redis.log"
            proc = stack.enter_context(process(args, log))
            wait_redis(p, proc, log)
            pids.append(proc.pid)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not all(
            "cluster_state:ok"
            in subprocess.run(
                ["redis-cli", "-h", "127.0.0.1", "-p", str(p), "cluster", "info"],
                capture_output=True,
                text=True,
            ).stdout
            for p in ports
        ):
            if time.monotonic() > deadline:
                raise ServerDied("cluster did not become ok")
            time.sleep(0.1)
        yield f"redis+cluster://127.0.0.1:{ports[0]}", pids


@contextlib.contextmanager
def target_server(
    target: str, workdir: Path, history_window: int
) -> Iterator[tuple[str, str, list[int], str]]:
    """Start `target`; yield (base URL, loadgen kind, pids whose CPU counts, server command)."""
    cache_args: list[str] = []
    if target.endswith("-nocache"):
        target = target.removesuffix("-nocache")
        cache_args = ["--window-cache-mb", "0"]
    port = free_port()
    log = workdir / f"{target}-server.log"
    with contextlib.ExitStack() as stack:
        extra: list[int] = []
        if target == "baseline":
            url, extra = stack.enter_context(redis_server(workdir))
            args = [PYTHON, str(ROOT / "benchmarks" / "baseline_server.py"),
                    "--port", str(port), "--redis", url]  # fmt: skip
            proc = stack.enter_context(process(args, log))
            wait_http(f"http://127.0.0.1:{port}/healthz", proc, log)
            command = "python benchmarks/baseline_server.py --port PORT --redis redis://…"
            yield f"http://127.0.0.1:{port}", "baseline", [proc.pid, *extra], command
            return
        if target == "sqlite":
            store = f"sqlite:///{workdir / 'bench.db'}"
        elif target == "memory":
            store = "memory://"
        elif target in ("redis", "redis-tenant"):
            store, extra = stack.enter_context(redis_server(workdir))
        elif target in ("postgres", "postgres+cache"):
            store, extra = stack.enter_context(postgres_server(workdir))
            STATEMENTS[f"http://127.0.0.1:{port}"] = store
        else:
            store, extra = stack.enter_context(redis_cluster(workdir))
        # The settings under test are the defaults, not whatever the caller's shell exports.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHOST_")}
        args = [AGENTHOST, "serve", "--port", str(port), "--store", store,
                "--llm", LLM_URL, "--history-window", str(history_window),
                "--log-level", "warning", "--allow-no-auth", *cache_args]  # fmt: skip
        if target == "postgres+cache":
            cache, cache_pids = stack.enter_context(redis_server(workdir))
            extra = [*extra, *cache_pids]
            CACHE_PIDS[f"http://127.0.0.1:{port}"] = cache_pids[0]
            args += ["--cache", cache]
        if target == "redis-tenant":
            created = subprocess.run(
                [AGENTHOST, "keys", "create", "--tenant", "bench", "--store", store,
                 *TENANT_LIMITS], capture_output=True, text=True, check=True, env=env,
            )  # fmt: skip
            BEARER[f"http://127.0.0.1:{port}"] = created.stdout.strip()
            args += ["--auth", "keys"]
        proc = stack.enter_context(process(args, log, env))
        wait_http(f"http://127.0.0.1:{port}/readyz", proc, log)
        shown_store = store.replace(str(workdir), "TMP").split("://")[0] + "://…"
        command = (
            f"agenthost serve --store {shown_store} --llm {LLM_URL} "
            f"--history-window {history_window}"
            + (" --window-cache-mb 0" if cache_args else "")
            + (
                " --auth keys (key: " + " ".join(TENANT_LIMITS) + ")"
                if target == "redis-tenant"
                else ""
            )
            + (" --cache redis://…" if target == "postgres+cache" else "")
        )
        yield f"http://127.0.0.1:{port}", "agenthost", [proc.pid, *extra], command


def loadgen(url: str, kind: str, prefix: str, **options: Any) -> dict[str, Any]:
    args = [PYTHON, str(ROOT / "benchmarks" / "loadgen.py"), "--url", url, "--kind", kind,
            "--prefix", prefix]  # fmt: skip
    if url in BEARER:
        args += ["--bearer", BEARER[url]]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    out = subprocess.run(args, capture_output=True, text=True, check=True, cwd=ROOT)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def measure_point(
    url: str, kind: str, pids: list[int], prefix: str, args: argparse.Namespace
) -> dict[str, Any]:
    """One measured run over already-prefilled sessions `prefix-*`."""
    database = STATEMENTS.get(url)
    statements_before = statements_run(database) if database else 0
    before = {pid: cpu_seconds(pid) for pid in pids}
    result = loadgen(
        url,
        kind,
        prefix,
        turns=args.turns,
        sessions=args.sessions,
        concurrency=args.concurrency,
        max_seconds=args.max_seconds,
        message_bytes=args.message_bytes,
    )
    after = {pid: cpu_seconds(pid) for pid in pids}
    answered = max(1, int(result["answered"]))
    # Read after the CPU, so the psql that reads it is not counted.
    statements = statements_run(database) - statements_before if database else None
    server_ms = (after[pids[0]] - before[pids[0]]) * 1000 / answered
    redis_ms = sum(after[p] - before[p] for p in pids[1:]) * 1000 / answered
    cache_pid = CACHE_PIDS.get(url)
    cache_ms = (
        None if cache_pid is None else (after[cache_pid] - before[cache_pid]) * 1000 / answered
    )
    return {
        "turns": result["answered"],
        "errors": result["errors"],
        "statuses": result["statuses"],
        "timed_out": result["timed_out"],
        "turns_per_s": round(result["answered"] / max(result["seconds"], 1e-9), 1),
        "server_cpu_ms_per_turn": round(server_ms, 4),
        "redis_cpu_ms_per_turn": round(redis_ms, 4),
        "cpu_ms_per_turn": round(server_ms + redis_ms, 4),
        **({} if statements is None else {"statements_per_turn": round(statements / answered, 3)}),
        # postgres+cache: redis_cpu_ms_per_turn is PostgreSQL's and the cache's together;
        # this is the cache's part.
        **({} if cache_ms is None else {"cache_cpu_ms_per_turn": round(cache_ms, 4)}),
    }


def measure(target: str, histories: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-{target}-"))
        url, kind, pids, command = stack.enter_context(
            target_server(target, Path(tmp), args.history_window)
        )
        # Warm-up: imports, caches, connection pools and Lua script loads happen here.
        warm = loadgen(
            url,
            kind,
            "warm",
            sessions=50,
            turns=args.warmup,
            concurrency=16,
            max_seconds=args.max_seconds,
        )
        for history in histories:
            prefill_turns = math.ceil(history / 2)
            prefill_errors = 0
            runs = []
            for i in range(args.repeats):
                # Every run gets its own freshly prefilled sessions, so that each run measures
                # the same history range instead of starting where the last one stopped.
                prefix = f"h{history}-r{i}"
                if history:
                    pre = loadgen(
                        url,
                        kind,
                        prefix,
                        prefill=history,
                        prefill_only=True,
                        message_bytes=args.message_bytes,
                        sessions=args.sessions,
                        concurrency=args.concurrency,
                        max_seconds=args.max_seconds,
                    )
                    prefill_errors += int(pre["errors"]) + (1 if pre["timed_out"] else 0)
                runs.append(measure_point(url, kind, pids, prefix, args))
                print(
                    json.dumps({"target": target, "history": history, "run": i, **runs[-1]}),
                    file=sys.stderr,
                )
            best = sorted(runs, key=lambda r: r["cpu_ms_per_turn"])[len(runs) // 2]
            turns_per_session = args.turns / args.sessions
            row = {
                "target": target,
                "history": history,
                # What each measured turn really saw: the prefill rounds up to whole turns,
                # and every measured turn adds two messages to its session.
                "history_messages_at_start": 2 * prefill_turns,
                "history_messages_at_end": 2 * (prefill_turns + math.ceil(turns_per_session)),
                **best,
                "errors": sum(r["errors"] for r in runs) + prefill_errors,
                "prefill_errors": prefill_errors,
                # The warm-up's errors are told once per target, on its first row.
                "warmup_errors": 0 if rows and rows[-1]["target"] == target else warm["errors"],
                "server_command": command,
            }
            if args.repeats > 1:
                row["cpu_ms_per_turn_runs"] = [r["cpu_ms_per_turn"] for r in runs]
                row["cpu_ms_per_turn_median_of"] = args.repeats
            rows.append(row)
    return rows


def summarize(
    rows: list[dict[str, Any]], histories: list[int], flatness: float = TARGET_FLATNESS
) -> dict[str, Any]:
    by = {(r["target"], r["history"]): r["cpu_ms_per_turn"] for r in rows}
    low, high = min(histories), max(histories)
    summary: dict[str, Any] = {}
    for target in dict.fromkeys(r["target"] for r in rows):
        entry: dict[str, Any] = {
            f"h{h}_cpu_ms_per_turn": by[(target, h)] for h in histories if (target, h) in by
        }
        flat = None
        if (target, low) in by and (target, high) in by and by[(target, low)]:
            flat = round(by[(target, high)] / by[(target, low)], 3)
            entry[f"h{high}_over_h{low}"] = flat
        if target != "baseline":
            for h in histories:
                if ("baseline", h) in by and by.get((target, h)):
                    entry[f"baseline_over_this_h{h}"] = round(
                        by[("baseline", h)] / by[(target, h)], 2
                    )
            # Issue 3's bar (at the shortest history, and the long one within 1.1x of it);
            # told for every agenthost store so that a regression shows.
            if (target, low) in by:
                entry["meets_cpu_target"] = by[(target, low)] <= TARGET_CPU_MS
            if flat is not None:
                entry["meets_flatness_target"] = flat <= flatness
            for h in histories:  # the window cache's A/B, when both were measured
                if (f"{target}-nocache", h) in by and by.get((target, h)):
                    entry[f"nocache_over_this_h{h}"] = round(
                        by[(f"{target}-nocache", h)] / by[(target, h)], 2
                    )
        # Issue 16's bars: PostgreSQL alone at most the reference design's figure, and with
        # the cache at most 1.3x agenthost on Redis.
        for h in histories:
            if target == "postgres" and ("baseline", h) in by:
                entry[f"meets_baseline_h{h}"] = by[(target, h)] <= by[("baseline", h)]
            if target == "postgres+cache" and ("redis", h) in by and by[("redis", h)]:
                ratio = round(by[(target, h)] / by[("redis", h)], 2)
                entry[f"over_redis_h{h}"] = ratio
                entry[f"meets_redis_1_3x_h{h}"] = ratio <= 1.3
        summary[target] = entry
    return summary


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT)
        return out.stdout.rstrip()  # not strip(): porcelain lines start with a space

    # Others may be editing the tree: a figure measured on uncommitted code says so.
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "src").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD") or "unknown", "dirty_src": dirty}


def machine() -> dict[str, Any]:
    model = platform.processor()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "os": platform.platform(),
        "redis_server": subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True
        ).stdout.strip(),
        "cpu_clock": "per-process CPU clock (ns)"
        if process_cpu_clock(os.getpid()) is not None
        else "psutil user+system (10 ms ticks)",
    }


def result_header(benchmark: str) -> dict[str, Any]:
    """What every benchmark's JSON starts with: which benchmark, the command that made it,
    when, on which commit (and whether the tree was clean) and on what machine."""
    git = git_state()
    return {
        "benchmark": benchmark,
        "command": f"python benchmarks/{benchmark}.py " + " ".join(sys.argv[1:]),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": git["commit"],  # the key older results and their readers use
        "git": git,
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", default="baseline,sqlite,redis",
                        help=f"comma-separated, of {', '.join(TARGETS)}")  # fmt: skip
    parser.add_argument("--histories", default="5,100", help="history lengths in messages")
    parser.add_argument("--turns", type=int, default=3000, help="measured turns per point")
    parser.add_argument(
        "--sessions",
        type=int,
        default=1000,
        help="sessions per history point; more keeps the history nearer H "
        "during the run, at the price of a longer prefill",
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument(
        "--history-window",
        type=int,
        default=50,
        help="messages agenthost hands the agent per turn (its --history-window); the "
        "baseline always reads the whole history",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="measured runs per point; the median is reported"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=300, help="time bound of each load-generator run"
    )
    parser.add_argument(
        "--message-bytes",
        type=int,
        default=0,
        help="pad each user message to this many bytes (0: a few words)",
    )
    parser.add_argument(
        "--flatness-target",
        type=float,
        default=TARGET_FLATNESS,
        help="the longest history's cost over the shortest's that passes (issue 21, 1 KB "
        "messages at history 200: 1.3)",
    )
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for t in targets:
        if t not in TARGETS:
            parser.error(f"unknown target {t!r}")
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed (make system-deps)")
    histories = [int(h) for h in args.histories.split(",")]
    load_before = os.getloadavg()
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    for target in targets:
        rows += measure(target, histories, args)
    result = {
        **result_header("turn_cpu"),
        # Other work on the machine changes how requests batch, so the load is on record.
        "load_average_1m": {
            "before": round(load_before[0], 2),
            "after": round(os.getloadavg()[0], 2),
        },
        "seconds": round(time.monotonic() - started, 1),
        "params": {
            "turns": args.turns,
            "sessions": args.sessions,
            "concurrency": args.concurrency,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "histories": histories,
            "history_window": args.history_window,
            "message_bytes": args.message_bytes,
            "llm": LLM_URL,
        },
        "targets": {"cpu_ms_per_turn": TARGET_CPU_MS, "flatness": args.flatness_target},
        "errors_total": sum(r["errors"] + r["warmup_errors"] for r in rows),
        "results": rows,
        "summary": summarize(rows, histories, args.flatness_target),
    }
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    if result["errors_total"]:
        print(f"turn_cpu: {result['errors_total']} errors; see 'statuses'", file=sys.stderr)


if __name__ == "__main__":
    main()
