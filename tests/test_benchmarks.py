"""The benchmark scripts keep working: a tiny run prints the JSON the docs are built from."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The benchmark runs each start several servers and load clients: under pytest-xdist they
# share one worker, one after another, rather than compete with each other for the cores.
pytestmark = pytest.mark.xdist_group("benchmarks")


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_turn_cpu_runs_and_reports_each_target_against_the_baseline(tmp_path: Path) -> None:
    out = tmp_path / "turn_cpu.json"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "benchmarks/turn_cpu.py", "--targets", "baseline,sqlite,redis",
         "--turns", "50", "--sessions", "10", "--warmup", "20", "--histories", "5,10",
         "--repeats", "2", "--max-seconds", "30", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # Kept quick so that it runs with every test run and the benchmark never rots (about
    # 25 s alone; the bound leaves room for the rest of the suite running beside it).
    assert time.monotonic() - started < 150
    printed = json.loads(proc.stdout)
    result = json.loads(out.read_text())
    assert printed == result
    assert result["benchmark"] == "turn_cpu"
    assert result["errors_total"] == 0
    assert {"cpu", "cores", "python"} <= set(result["machine"])
    assert result["git"]["commit"] and result["date"]
    rows = {(r["target"], r["history"]): r for r in result["results"]}
    assert set(rows) == {(t, h) for t in ("baseline", "sqlite", "redis") for h in (5, 10)}
    for row in rows.values():
        assert row["errors"] == 0 and row["turns"] == 50
        assert row["cpu_ms_per_turn"] > 0
        assert row["cpu_ms_per_turn_median_of"] == 2
        assert row["cpu_ms_per_turn"] in row["cpu_ms_per_turn_runs"]
        assert row["cpu_ms_per_turn"] == pytest.approx(
            row["server_cpu_ms_per_turn"] + row["redis_cpu_ms_per_turn"], abs=1e-3
        )
        assert row["history_messages_at_start"] == {5: 6, 10: 10}[row["history"]]
    # Redis CPU is counted for the stores that use Redis, and only for them.
    assert rows[("redis", 5)]["redis_cpu_ms_per_turn"] > 0
    assert rows[("baseline", 5)]["redis_cpu_ms_per_turn"] > 0
    assert rows[("sqlite", 5)]["redis_cpu_ms_per_turn"] == 0
    for target in ("sqlite", "redis"):
        summary = result["summary"][target]
        assert {"h10_over_h5", "baseline_over_this_h5", "baseline_over_this_h10"} <= set(summary)
        assert isinstance(summary["meets_cpu_target"], bool)
    render_docs = load_script("render_docs")
    rendered = render_docs.turn_cpu(result)
    assert "| redis | 5 |" in rendered and result["command"] in rendered
    assert "{" not in rendered  # every placeholder was filled


def test_stream_gaps_runs_both_transports_and_stores_and_reports_gaps(tmp_path: Path) -> None:
    out = tmp_path / "stream_gaps.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/stream_gaps.py", "--streams", "20", "--transport",
         "sse,ws", "--coalesce-ms", "0", "--answer-s", "1", "--ramp", "0.2",
         "--stores", "memory,redis", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert json.loads(proc.stdout) == result
    assert result["benchmark"] == "stream_gaps" and result["errors_total"] == 0
    assert [(r["store"], r["transport"], r["streams"]) for r in result["results"]] == [
        ("memory", "sse", 20),
        ("memory", "ws", 20),
        ("redis", "sse", 20),
        ("redis", "ws", 20),
    ]
    for row in result["results"]:
        # The Redis rows count the redis-server's CPU too (it stores every chunk).
        assert (row["redis_cpu_s"] > 0) == (row["store"] == "redis")
    for row in result["results"]:
        assert row["completed"] == 20 and row["server_alive"]
        # About 30 tokens in 1 s at 30 tokens/s, a few merged when they meet in one flush.
        assert 20 <= row["chunks_per_stream"] <= 30
        gap = row["gap_ms"]
        assert 0 <= gap["p50"] <= gap["p99"] <= gap["max"]
        assert 20 < gap["p50"] < 60  # the model's pace: a token every 33 ms
        assert row["first_chunk_ms"]["p50"] < row["stream_s"]["p50"] * 1000
        assert row["server_cpu_ms_per_stream_s"] > 0 and row["client_cpu_pct"] > 0
        assert isinstance(row["meets_p99_gap_target"], bool)
        # Kernel receive times only when asked for (they cost the clients CPU).
        assert row["socket_gap_ms"] is None and row["client_read_delay_ms"] is None
        # What held the server's loop, from its /metrics over the row: every chunk left
        # through a pass of the flusher (coalescing off: one per turn of the loop).
        waits = row["server_waits"]
        assert waits["flush_passes"] > 0 and waits["streams_per_flush_pass"] >= 1
        assert waits["flush_pass_mean_ms"] > 0 and set(waits["gc"]) == {"0", "1", "2"}
        assert waits["loop_lag_p99_ms_at_most"] is not None
        assert 0 < waits["window_p50_ms_at_most"] <= waits["window_p99_ms_at_most"]
    rendered = load_script("render_docs").stream_gaps(result)
    assert "| memory | sse | 0 | 20 | 0 |" in rendered and result["command"] in rendered
    assert "| redis | ws | 0 | 20 | 0 |" in rendered and "(+ redis: " in rendered
    assert "{" not in rendered


async def test_stream_gaps_sse_client_counts_every_chunk_however_the_reads_cut_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SSE load client keeps nothing from a read that ends an event, and the end of one
    that does not: every `chunk` event is counted once, at the read that completes it."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # it imports its siblings
    gaps = importlib.import_module("stream_gaps")
    events = [
        b"%x\r\n%s\r\n" % (len(body), body)
        for body in [
            b'id: %d\nevent: chunk\ndata: {"text":"t%d"}\n\n' % (seq, seq) for seq in range(1, 9)
        ]
        + [b": ping\n\n", b'id: 9\nevent: done\ndata: {"text":"x"}\n\n']
    ]
    body = b"".join(events)
    cuts = [
        [body],  # all at once
        events,  # one read per event, as the server writes them
        [body[i : i + 7] for i in range(0, len(body), 7)],  # markers cut everywhere
        [events[0] + events[1][:20], events[1][20:] + events[2][:5], *events[2:]],
    ]
    for reads in cuts:
        client = gaps.SSEClient(gaps.StreamRecord(), "127.0.0.1", 1, "s")
        client.headers_done = True
        for i, read in enumerate(reads):
            client.body_received(read, float(i), float(i))
        assert len(client.record.arrivals) == 8 and client.record.done
    # The arrival time is that of the read that completes the marker.
    client = gaps.SSEClient(gaps.StreamRecord(), "127.0.0.1", 1, "s")
    client.headers_done = True
    client.body_received(events[0][:12], 1.0, 1.0)  # up to "event: ch"
    client.body_received(events[0][12:], 2.0, 2.0)
    assert client.record.arrivals == [2.0]


def test_stream_gaps_times_chunks_by_the_kernels_receive_time_when_asked(tmp_path: Path) -> None:
    out = tmp_path / "stream_gaps.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/stream_gaps.py", "--streams", "20", "--transport",
         "sse,ws", "--coalesce-ms", "0", "--answer-s", "1", "--ramp", "0.2",
         "--socket-timestamps", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["errors_total"] == 0
    for row in result["results"]:
        assert row["completed"] == 20
        socket_gap, delay = row["socket_gap_ms"], row["client_read_delay_ms"]
        assert 0 <= socket_gap["p50"] <= socket_gap["p99"] <= socket_gap["max"]
        assert 20 < socket_gap["p50"] < 60  # the model's pace, as the sockets received it
        # Read after the kernel received it, never before: both on one clock (the wall
        # clock's offset to the monotonic one, taken once, may drift by microseconds).
        assert -1 < delay["p50"] <= delay["p99"] <= delay["max"] < 1000


def test_stream_gaps_with_workers_sums_the_cpu_of_every_server_process(tmp_path: Path) -> None:
    out = tmp_path / "stream_gaps.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/stream_gaps.py", "--streams", "40", "--coalesce-ms", "0",
         "--answer-s", "1", "--ramp", "0.2", "--stores", "redis", "--workers", "2",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["errors_total"] == 0 and result["params"]["server_processes"] == 2
    (row,) = result["results"]
    assert row["completed"] == 40 and row["server_processes"] == 2
    shares = row["server_cpu_pct_per_process"]
    assert len(shares) == 2 and all(share > 0 for share in shares)  # both processes served
    # The share of the cores is of two cores: the tree's CPU over the run, halved. The tree
    # holds the supervisor too, so the share is never below the mean of the processes'.
    assert row["server_cpu_pct"] == pytest.approx(
        100 * row["server_cpu_s"] / row["window_s"] / 2, rel=0.02, abs=0.1
    )
    assert row["server_cpu_pct"] >= sum(shares) / 2 - 0.2
    assert row["server_user_ms_per_stream_s"] > 0
    refused = subprocess.run(
        [sys.executable, "benchmarks/stream_gaps.py", "--stores", "memory", "--workers", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2 and "--stores redis" in refused.stderr


def test_concurrent_sessions_reports_what_the_p99_may_wait_on(tmp_path: Path) -> None:
    out = tmp_path / "sessions.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/concurrent_sessions.py", "--sessions", "50", "--turns",
         "2", "--llm-latency-ms", "300", "--ramp", "0.2", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(out.read_text())["results"]
    assert row["answered"] == 100 and row["lost"] == 0
    assert row["server_loop_lag_probes"] > 0 and row["server_loop_lag_p99_ms_at_most"] > 0
    assert set(row["server_gc"]) == {"0", "1", "2"}
    assert row["client_loop_lag_ms"]["max"] >= 0 and row["client_gc_pauses"] >= 0
    assert row["client"] == "lean"
    assert row["server_cpu_ms_per_turn"] > 0 and row["client_cpu_ms_per_turn"] > 0


def test_concurrent_sessions_with_workers_reports_each_process(tmp_path: Path) -> None:
    out = tmp_path / "sessions.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/concurrent_sessions.py", "--sessions", "40", "--turns",
         "2", "--llm-latency-ms", "200", "--ramp", "0.2", "--workers", "2",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(out.read_text())["results"]
    assert row["answered"] == 80 and row["lost"] == 0
    processes = row["per_process"]
    assert set(processes) == {"0", "1"}
    assert sum(p["turns"] for p in processes.values()) == 80  # this run's, not the probes'
    assert all(p["cpu_pct_of_core"] > 0 for p in processes.values())
    assert all(p["loop_lag_p99_ms_at_most"] is not None for p in processes.values())
    rendered = load_script("render_docs").concurrent_sessions(
        {"command": "c", "date": "d", "git_commit": "g", "machine": {}, "results": [row]}
    )
    turns = " / ".join(f"{processes[p]['turns']:,}" for p in ("0", "1"))
    assert f"| {turns} |" in rendered and "{" not in rendered


def test_idle_websockets_runs_and_reports_memory_per_connection(tmp_path: Path) -> None:
    out = tmp_path / "idle_websockets.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/idle_websockets.py", "--connections", "200",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["benchmark"] == "idle_websockets"
    (row,) = result["results"]
    assert row["opened"] == 200 and row["failed_to_open"] == 0
    assert row["still_open_at_end"] == 200 and row["server_alive"]
    assert row["after_one_turn_each"]["turns_answered"] == 200
    assert row["server_mb"]["rss_idle"] > row["server_mb"]["rss_before"] > 0
    assert 0 < row["idle"]["rss_kb_per_connection"] < 1000
    assert isinstance(row["meets_target"], bool)
    rendered = load_script("render_docs").idle_websockets(result)
    assert "| 200 | 200 | 0 |" in rendered and "{" not in rendered


def test_idle_websockets_profile_runs_the_server_in_its_own_process(tmp_path: Path) -> None:
    # --profile serves from the benchmark's own process (tracemalloc inside the server).
    out = tmp_path / "idle_websockets_profile.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/idle_websockets.py", "--connections", "50", "--profile",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(out.read_text())["results"]
    assert row["opened"] == 50 and row["server_alive"]
    assert row["tracemalloc_idle"] and row["tracemalloc_turn"]


def test_llm_transport_runs_and_compares_both_transports(tmp_path: Path) -> None:
    out = tmp_path / "llm_transport.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/llm_transport.py", "--requests", "40", "--warmup", "10",
         "--concurrency", "8", "--repeats", "1", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert json.loads(proc.stdout) == result
    assert result["benchmark"] == "llm_transport" and result["errors_total"] == 0
    rows = {(r["transport"], r["mode"]): r for r in result["results"]}
    assert set(rows) == {(t, m) for t in ("aiohttp", "httpx") for m in ("complete", "stream")}
    for row in rows.values():
        assert row["errors"] == 0 and len(row["runs"]) == 1
        assert row["cpu_ms_per_request"] > 0 and row["requests_per_s"] > 0
        assert row["cpu_ms_per_request_min"] <= row["cpu_ms_per_request"]
    assert result["params"]["tokens_per_stream"] == 50
    assert set(result["summary"]) == {"complete", "stream"}
    for summary in result["summary"].values():
        assert summary["cheaper"] in ("aiohttp", "httpx") and summary["ratio"] >= 1
        assert isinstance(summary["beyond_noise"], bool)
    assert {r["requests"] for r in result["results"]} == {"lean", "typed"}
    assert {(r["transport"], r["mode"]) for r in result["lean_against_typed"]} == set(rows)
    rendered = load_script("render_docs").llm_transport(result)
    assert "| aiohttp | lean | stream |" in rendered and result["command"] in rendered
    assert "{" not in rendered


def test_streamed_turns_runs_agenthost_beside_the_sample_server(tmp_path: Path) -> None:
    out = tmp_path / "streamed_turns.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/streamed_turns.py", "--targets", "agenthost,baseline",
         "--sessions", "4", "--turns", "2", "--concurrency", "2", "--history", "4",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["benchmark"] == "streamed_turns" and result["errors_total"] == 0
    rows = {r["target"]: r for r in result["results"]}
    assert set(rows) == {"agenthost", "baseline"}
    for row in rows.values():
        assert row["turns"] == 8 and row["cpu_ms_per_turn"] > 0
    assert rows["agenthost"]["chunks_per_turn"] >= 1  # streamed to the client
    assert set(result["summary"]) == {"baseline"}
    rendered = load_script("render_docs").streamed_turns(result)
    assert result["command"] in rendered and "{" not in rendered


def test_adapter_cpu_runs_every_protocol_beside_the_native_endpoint(tmp_path: Path) -> None:
    out = tmp_path / "adapter_cpu.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/adapter_cpu.py", "--turns", "16", "--repeats", "1",
         "--concurrency", "4", "--words", "3", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["benchmark"] == "adapter_cpu" and result["errors_total"] == 0
    rows = {r["protocol"]: r for r in result["results"]}
    assert set(rows) == {"native", "openai_chat", "openai_responses", "ai_sdk", "ag_ui"}
    assert rows["native"]["ratio"] == 1.0
    assert all(r["cpu_ms_per_turn"] > 0 for r in rows.values())
    rendered = load_script("render_docs").adapter_cpu(result)
    assert "| openai_chat |" in rendered and "ratio to native" in rendered


def test_turn_cpu_counts_postgres_cpu_and_two_statements_per_turn(tmp_path: Path) -> None:
    out = tmp_path / "turn_cpu.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/turn_cpu.py", "--targets", "postgres", "--turns", "40",
         "--sessions", "10", "--warmup", "20", "--histories", "5", "--repeats", "1",
         "--concurrency", "1", "--message-bytes", "1024", "--max-seconds", "30",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["errors_total"] == 0 and result["params"]["message_bytes"] == 1024
    (row,) = result["results"]
    assert row["target"] == "postgres" and row["turns"] == 40
    assert row["redis_cpu_ms_per_turn"] > 0  # the postgres processes' CPU
    # begin and commit: one server-side function call each, nothing else (one turn at a time:
    # a turn that waits for a busy session asks once more, which is right but not counted here).
    assert row["statements_per_turn"] == 2
    rendered = load_script("render_docs").turn_cpu(result)
    assert "| postgres | 5 |" in rendered and "1024-byte messages" in rendered


def test_turn_cpu_with_the_cache_counts_two_statements_and_the_caches_cpu(
    tmp_path: Path,
) -> None:
    """postgres+cache: a warm turn is still begin and commit in PostgreSQL (the window and
    metadata come from Redis, the lease and the commit do not), and the cache's
    redis-server CPU is told apart from PostgreSQL's."""
    out = tmp_path / "turn_cpu.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/turn_cpu.py", "--targets", "postgres+cache", "--turns",
         "40", "--sessions", "10", "--warmup", "20", "--histories", "5", "--repeats", "1",
         "--concurrency", "1", "--max-seconds", "30", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    (row,) = result["results"]
    assert row["target"] == "postgres+cache" and row["turns"] == 40 and row["errors"] == 0
    assert row["statements_per_turn"] == 2
    assert 0 < row["cache_cpu_ms_per_turn"] < row["redis_cpu_ms_per_turn"]
    assert "--cache redis://" in row["server_command"]
    rendered = load_script("render_docs").turn_cpu(result)
    assert "| postgres+cache | 5 |" in rendered


def test_pg_steps_charges_each_step_and_splits_statement_from_turn(tmp_path: Path) -> None:
    """pg_steps: each batch size's begins go as one statement and its commits as another,
    and the fit over the batch sizes splits each step's cost per statement and per turn."""
    out = tmp_path / "pg_steps.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/pg_steps.py", "--batches", "1,4", "--turns", "40",
         "--warmup-rounds", "2", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["benchmark"] == "pg_steps" and result["params"]["known"] is True
    one, four = result["results"]
    assert (one["batch"], one["turns"], four["batch"], four["turns"]) == (1, 40, 4, 40)
    assert one["statements_per_turn"] == 2 and four["statements_per_turn"] == 0.5
    for row in (one, four):
        assert row["begin_ms_per_turn"] > 0 and row["commit_ms_per_turn"] > 0
    assert set(result["fit"]["commit"]) == {"per_statement_ms", "per_turn_ms"}


def test_durability_with_the_cache_kills_it_mid_run_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    out = tmp_path / "durability.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/durability.py", "--cache", "--sessions", "20", "--turns",
         "4", "--llm", "sim://?latency_ms=100", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["clean"] and result["params"]["cache"]
    assert result["answered"] == 80 and result["committed_in_postgres_at_end"] == 80
    assert result["verification"]["lost"] == 0
    served = result["session_cache"]
    assert served["hit"] > 0 and sum(served.values()) >= 80
    rendered = load_script("render_docs").durability(result)
    assert "with a Redis cache" in rendered and "served by the cache" in rendered


def test_durability_kills_redis_mid_run_and_the_verifier_finds_nothing_lost(
    tmp_path: Path,
) -> None:
    out = tmp_path / "durability.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/durability.py", "--sessions", "20", "--turns", "4",
         "--llm", "sim://?latency_ms=100", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["benchmark"] == "durability" and result["clean"]
    assert 40 <= result["committed_when_redis_was_killed"] < 80
    assert result["answered"] == 80 and result["committed_in_postgres_at_end"] == 80
    assert result["verification"]["lost"] == 0
    rendered = load_script("render_docs").durability(result)
    assert "| 80 / 80 |" in rendered and "{" not in rendered


def test_framework_cpu_runs_each_adapter_beside_the_plain_agent(tmp_path: Path) -> None:
    out = tmp_path / "framework_cpu.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/framework_cpu.py", "--turns", "10", "--warmup", "2",
         "--sessions", "2", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result == json.loads(proc.stdout) and result["benchmark"] == "framework_cpu"
    rows = result["results"]
    for target in ("plain", "langgraph", "openai-agents", "pydantic-ai"):
        assert rows[target]["turns"] == 10 and rows[target]["errors"] == 0
        assert rows[target]["cpu_ms_per_turn"] >= 0
    # `langgraph dev` needs its own environment (--langgraph-bin); without it, it is said.
    assert rows["langgraph-dev"] == {"skipped": "no --langgraph-bin"}
    rendered = load_script("render_docs").framework_cpu(result)
    assert "| langgraph | **" in rendered and "skipped: no --langgraph-bin" in rendered


def test_queue_split_compares_all_with_api_and_worker(tmp_path: Path) -> None:
    out = tmp_path / "queue_split.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/queue_split.py", "--turns", "12", "--repeats", "1",
         "--concurrency", "3", "--latency-turns", "6", "--latency-concurrency", "3",
         "--llm-latency-ms", "50", "--worker-concurrency", "4", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["benchmark"] == "queue_split" and result["errors_total"] == 0
    rows = {r["layout"]: r for r in result["results"]}
    assert set(rows) == {"all", "split"}
    assert all(r["cpu_ms_per_turn"] > 0 and r["p99_ms"] >= 50 for r in rows.values())
    assert result["cpu_ratio"] > 0
    # Where the CPU goes: each process's share, and the Redis commands per turn.
    assert set(rows["split"]["cpu_ms_by_process"]) == {"api", "worker", "redis-server"}
    assert rows["split"]["redis_commands_per_turn"]["xadd"] > 0  # the queue's entries
    assert "xadd" not in rows["all"]["redis_commands_per_turn"]
    rendered = load_script("render_docs").queue_split(result)
    assert "| split |" in rendered and "Split over all" in rendered
    assert "Per turn, by process: `all`: all " in rendered
    # Latency with the sessions ramped in (the target) and all at once (the burst).
    assert result["settings"]["latency_ramp_s"] == 0.05
    assert all(r["burst_p99_ms"] >= 50 and r["burst_turns"] == 6 for r in rows.values())
    assert "evenly over 0.05 s" in rendered and "Burst (every session's first turn" in rendered


def test_rollout_reads_the_slices_of_the_load_tests_own_timeline_that_overlap_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rollout's p99 is read off the points `agenthost loadtest` writes: a change of their
    format must show here rather than in the next quiet-machine run (it did once)."""
    import msgspec

    from agenthost.loadtest.report import timeline

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the script imports its siblings
    rollout = load_script("rollout")
    # Turns answered over 10 s: slices of 0.5 s; the slow ones between 4 and 6 s.
    done = [(t / 10, 3000.0 if 40 <= t < 60 else 100.0) for t in range(100)]
    points = msgspec.json.decode(msgspec.json.encode(timeline(done, span_s=10.0)))
    during = rollout.during_rollout(points, 4.6, 5.4)
    assert [p["start_s"] for p in during] == [4.5, 5.0]
    assert max(p["p99_ms"] for p in during) == 3000.0
    assert rollout.during_rollout(points, 20.0, 21.0) == []


def test_stream_gaps_names_the_code_of_an_error_event(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # as its own run finds its siblings
    error_code = importlib.import_module("stream_gaps").error_code
    event = b'event: error\ndata: {"code": "lease_lost", "message": "gone"}\n\n'
    assert error_code(event) == "lease_lost"
    assert error_code(event[:20]) == "?"  # cut by a read boundary


def test_recorded_notes_follow_the_concurrent_sessions_and_queue_split_tables() -> None:
    render_docs = load_script("render_docs")
    for name, render in (
        ("concurrent_sessions_workers2", render_docs.concurrent_sessions),
        ("queue_split", render_docs.queue_split),
    ):
        result = json.loads((ROOT / "benchmarks" / "results" / f"{name}.json").read_text())
        result["notes"] = "A note on this run."
        assert render(result).rstrip().endswith("A note on this run.")
        del result["notes"]
        assert "A note on this run." not in render(result)


def test_the_stream_gaps_section_says_the_servers_windows_when_recorded() -> None:
    render_docs = load_script("render_docs")
    path = ROOT / "benchmarks" / "results" / "stream_gaps_workers2.json"
    result = json.loads(path.read_text())
    assert all("server_waits" in r for r in result["results"])
    rendered = render_docs.stream_gaps(result)
    assert "The server's side of the gap" in rendered and "redis ws: a window" in rendered
    for r in result["results"]:
        del r["server_waits"]
    assert "The server's side of the gap" not in render_docs.stream_gaps(result)
