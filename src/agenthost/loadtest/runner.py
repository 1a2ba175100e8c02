"""Runs the sessions: ramp, think time with jitter, a fixed number of turns or a duration,
and retries of transient failures with the same Idempotency-Key after Retry-After or a
jittered backoff — then verifies.

SIGINT (Ctrl-C) or SIGTERM ends a run early without losing what it proves: no session starts
another turn, the turns in flight finish, and every history is verified as after a normal
end. A second signal acts as it would without the load tester's handler."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import random
import secrets
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import aiohttp
import msgspec

from agenthost.loadtest.client import Attempt, send_turn
from agenthost.loadtest.config import LoadConfig
from agenthost.loadtest.lean_http import LeanHttpClient, lean_http_usable
from agenthost.loadtest.report import LoadReport, percentiles, timeline
from agenthost.loadtest.verify import Acked, Verification, merge_verifications, verify

__all__ = ["Progress", "RunData", "build_report", "collect", "run_load"]

# Failures a retry with the same key can fix: nothing was committed twice, by design.
_TRANSIENT_STATUS = {0, 409, 429, 502, 503, 504}
_PERMANENT_CODES = {"interrupted", "agent_error", "validation_error", "invalid_json"}


class Progress:
    """Live counters, read by the display while the run goes on."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.sent = 0
        self.answered = 0
        self.failed = 0
        self.retries = 0
        self.inflight = 0
        self.latencies: list[float] = []

    def recent_percentiles(self) -> tuple[float, float]:
        window = sorted(self.latencies[-2000:])
        if not window:
            return 0.0, 0.0
        return window[len(window) // 2], window[min(len(window) - 1, int(len(window) * 0.99))]


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """Set `stop` on the first SIGINT or SIGTERM, then give the signals back. Where the loop
    cannot take signals (not the main thread), the run simply has no early end."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []

    def first(_: signal.Signals) -> None:
        stop.set()
        for each in installed:
            loop.remove_signal_handler(each)

    for sig in _STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, first, sig)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if the run is told to stop."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


def _backoff(attempt: int, rng: random.Random) -> float:
    delay: float = min(5.0, 0.05 * 2**attempt) * rng.uniform(0.5, 1.5)
    return delay


class RunData(msgspec.Struct):
    """What one client process measured: merged with other processes' into one report."""

    started_at: str
    began: float  # time.monotonic() at the start (the clock is the machine's, not the process's)
    ended: float
    cpu_s: float
    sent: int
    answered: int
    failed: int
    retries: int
    failed_by: dict[str, int]
    retried_by: dict[str, int]
    done: list[tuple[float, float]]  # (answered at, monotonic s; latency ms)
    first_chunks: list[float]
    lags: list[float]
    pauses: list[tuple[int, float]]
    verification: Verification | None
    stopped: bool


async def run_load(
    config: LoadConfig, progress: Progress | None = None, on_tick: Callable[[], None] | None = None
) -> LoadReport:
    """Run `config` against its server and return the verified report."""
    return build_report(config, [await collect(config, progress, on_tick)])


async def collect(
    config: LoadConfig, progress: Progress | None = None, on_tick: Callable[[], None] | None = None
) -> RunData:
    """Run `config` in this process and return what it measured, verified."""
    progress = progress or Progress()
    rng = random.Random(config.seed)
    run_id = secrets.token_hex(3)
    acked: dict[str, list[Acked]] = {}
    done: list[tuple[float, float]] = []  # (answered at, monotonic s; latency ms)
    first_chunks: list[float] = []
    failed_by: Counter[str] = Counter()
    retried_by: Counter[str] = Counter()
    padding = "x" * config.payload_bytes
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    cpu0, wall0 = time.process_time(), time.monotonic()
    end = wall0 + config.duration if config.duration else None
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    stop = asyncio.Event()

    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=config.request_timeout)
    # No shared cookie jar: each simulated session is its own client, so a balancer's
    # affinity cookie set for one must not pin all of them to one server.
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        headers=headers,
        cookie_jar=aiohttp.DummyCookieJar(),
    ) as http:
        sender = config.mode if config.background == "off" else f"background-{config.background}"
        lean = (
            LeanHttpClient(config.url, headers, config.request_timeout)
            if config.client == "lean" and sender == "http" and lean_http_usable(config.url)
            else None
        )

        async def one_turn(sid: str, n: int) -> None:
            tid = f"{sid}-t{n}"
            message = f"{sid} turn {n} {padding}".rstrip()
            body = {"message": message, "on_busy": config.on_busy}
            t0 = time.monotonic()
            progress.sent += 1
            progress.inflight += 1
            try:
                for attempt in range(config.max_retries + 1):
                    result: Attempt = await (
                        lean.send(sid, tid, body)
                        if lean is not None
                        else send_turn(sender, http, config.url, sid, tid, body)
                    )
                    if result.status == 200 and result.error is None:
                        answered_at = time.monotonic()
                        latency = (answered_at - t0) * 1000
                        acked.setdefault(sid, []).append(Acked(tid, message, result.response or ""))
                        done.append((answered_at, latency))
                        progress.latencies.append(latency)
                        progress.answered += 1
                        if result.first_chunk_s is not None:
                            first_chunks.append(result.first_chunk_s * 1000)
                        return
                    kind = result.error or f"http_{result.status}"
                    transient = (
                        result.status in _TRANSIENT_STATUS and kind not in _PERMANENT_CODES
                    ) or kind.startswith(("ws_closed", "stream_cut"))
                    if not transient or attempt == config.max_retries:
                        failed_by[kind] += 1
                        progress.failed += 1
                        return
                    retried_by[kind] += 1
                    progress.retries += 1
                    wait = result.retry_after if result.retry_after is not None else None
                    await asyncio.sleep(wait if wait is not None else _backoff(attempt, rng))
            finally:
                progress.inflight -= 1

        async def session(i: int) -> None:
            sid = f"{config.session_prefix}-{run_id}-{i}"
            n = 0
            while not stop.is_set() and (
                (n < config.turns) if end is None else (time.monotonic() < end)
            ):
                await one_turn(sid, n)
                n += 1
                if config.think:
                    await _pause(stop, config.think * rng.uniform(0.5, 1.5))

        async def ramped() -> None:
            """Start each session at its point of the ramp. One starter sleeps for all of
            them: thousands of sessions each asleep on its own timer would be thousands of
            live objects for the garbage collector to walk while the load runs."""
            begun = time.monotonic()
            running = []
            for i in range(config.sessions):
                if config.ramp:
                    due = begun + config.ramp * i / config.sessions - time.monotonic()
                    if due > 0.001:
                        await _pause(stop, due)
                if stop.is_set():
                    break
                running.append(asyncio.ensure_future(session(i)))
            await asyncio.gather(*running)

        async def ticker() -> None:
            while True:
                await asyncio.sleep(0.5)
                if on_tick is not None:
                    on_tick()

        tick = asyncio.create_task(ticker())
        lags: list[float] = []
        lag_probe = asyncio.create_task(_loop_lag(lags))
        try:
            with _stop_on_signals(stop), _gc_pauses() as pauses:
                await ramped()
        finally:
            tick.cancel()
            lag_probe.cancel()
            if lean is not None:
                lean.close()
        ended = time.monotonic()
        cpu = time.process_time() - cpu0
        verification = await verify(http, config.url, acked) if config.verify else None
    return RunData(
        started_at=started_at,
        began=wall0,
        ended=ended,
        cpu_s=cpu,
        sent=progress.sent,
        answered=progress.answered,
        failed=progress.failed,
        retries=progress.retries,
        failed_by=dict(failed_by),
        retried_by=dict(retried_by),
        done=done,
        first_chunks=first_chunks,
        lags=lags,
        pauses=pauses,
        verification=verification,
        stopped=stop.is_set(),
    )


def build_report(config: LoadConfig, parts: Sequence[RunData]) -> LoadReport:
    """One report of the runs of one or more client processes, as if one had run them all;
    the client's CPU share is that of its busiest process (each has one core at most)."""
    began = min(p.began for p in parts)
    wall = max(p.ended for p in parts) - began
    cpu = sum(p.cpu_s for p in parts)
    cpu_pct = max(100 * p.cpu_s / (p.ended - p.began) if p.ended > p.began else 0.0 for p in parts)
    done = sorted((at - began, latency) for p in parts for at, latency in p.done)
    pauses = [pause for p in parts for pause in p.pauses]
    stopped = any(p.stopped for p in parts)
    answered = sum(p.answered for p in parts)
    warnings = []
    saturated = cpu_pct > 80
    if stopped:
        warnings.append(f"stopped by a signal after {wall:.1f} s; the turns sent were verified")
    if saturated:
        warnings.append(
            f"a load generator process used {cpu_pct:.0f}% of a core: it may be the "
            "bottleneck; spread the load over more (--processes) or other machines"
        )
    return LoadReport(
        config=config,
        started_at=min(p.started_at for p in parts),
        wall_s=round(wall, 3),
        sent=sum(p.sent for p in parts),
        answered=answered,
        failed=sum(p.failed for p in parts),
        retries=sum(p.retries for p in parts),
        failed_by_kind=dict(sum((Counter(p.failed_by) for p in parts), Counter())),
        retried_by_kind=dict(sum((Counter(p.retried_by) for p in parts), Counter())),
        turns_per_s=round(answered / wall, 2) if wall > 0 else 0.0,
        latency_ms=percentiles([latency for _, latency in done]),
        first_chunk_ms=percentiles([ms for p in parts for ms in p.first_chunks]),
        verification=merge_verifications([p.verification for p in parts]),
        client_cpu_s=round(cpu, 3),
        client_cpu_pct=round(cpu_pct, 1),
        saturated=saturated,
        client_loop_lag_ms=percentiles([lag * 1000 for p in parts for lag in p.lags]),
        client_gc_pauses=len(pauses),
        client_gc_pause_max_ms=round(max((p for _, p in pauses), default=0.0) * 1000, 2),
        client_gc_pause_ms_by_generation={
            str(g): round(1000 * sum(p for gen, p in pauses if gen == g), 2)
            for g in sorted({gen for gen, _ in pauses})
        },
        warnings=warnings,
        timeline=timeline(done, span_s=wall),
        stopped_early=stopped,
    )


async def _loop_lag(lags: list[float], period: float = 0.05) -> None:
    """How late this client's event loop runs a timer: a late client stamps every answer
    late, and its lag would be read as the server's latency."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + period
        await asyncio.sleep(period)
        lags.append(max(0.0, loop.time() - due))


@contextlib.contextmanager
def _gc_pauses() -> Iterator[list[tuple[int, float]]]:
    """The generation and duration of every garbage collection of this process while the
    block runs."""
    pauses: list[tuple[int, float]] = []
    started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        elif started[0]:
            pauses.append((int(info.get("generation", 0)), time.perf_counter() - started[0]))

    gc.callbacks.append(on_gc)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(on_gc)
