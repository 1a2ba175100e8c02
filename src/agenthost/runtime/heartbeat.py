"""This process's heartbeat: every `--heartbeat-interval` seconds it writes a record of
itself to the process registry (address, version, state, connections, in-flight turns,
turns/s, p99, CPU, RSS, its last minutes as samples, its recent turns and refusals), so
the dashboard of any process shows the whole fleet.

A record lives three intervals: a process that dies leaves the list by itself. A drain
beats at once (the dashboard shows `draining` while in-flight turns finish); a clean stop
writes a last `stopped` record, kept for a minute. A registry that cannot be reached is
logged once per outage and never stops the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable

from agenthost.core.errors import AgentHostError
from agenthost.observability.metrics import Metrics
from agenthost.registry import ProcessRecord, ProcessRegistry, Sample

__all__ = ["HISTORY_S", "Heartbeat", "new_process_id", "p99"]

log = logging.getLogger("agenthost.heartbeat")

HISTORY_S = 300.0
"""How far back a record's samples reach (the dashboard's charts)."""

STOPPED_TTL_S = 60.0


def new_process_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def p99(durations: list[float]) -> float | None:
    """The 99th percentile (nearest rank) of `durations`; None without any."""
    if not durations:
        return None
    ordered = sorted(durations)
    return round(ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)], 4)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Heartbeat:
    def __init__(
        self,
        registry: ProcessRegistry,
        metrics: Metrics,
        *,
        address: str,
        version: str,
        role: str,
        interval: float,
        process_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.interval = interval
        self.clock = clock
        self.process_id = process_id or new_process_id()
        self.address = address
        self.version = version
        self.role = role
        self.started_at = clock()
        self.history: deque[Sample] = deque(maxlen=max(2, int(HISTORY_S / interval)))
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._failing = False
        self._last_at = time.monotonic()
        self._last_cpu = time.process_time()
        self._last_turns = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="heartbeat")

    def beat_soon(self) -> None:
        """Beat now rather than at the next interval (a drain has started)."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop beating and write a last record that says the process stopped."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._write(self.record(state="stopped"), STOPPED_TTL_S)

    async def _run(self) -> None:
        while True:
            await self._write(self.record(), self.interval * 3)
            # asyncio.timeout, not wait_for: on Python 3.11 a wait_for cancelled as its inner
            # wait ends can lose the cancellation, and stop() then waited for ever (seen once
            # in a few hundred in-process app shutdowns).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()

    async def _write(self, record: ProcessRecord, ttl_s: float) -> None:
        try:
            await self.registry.beat(record, ttl_s)
        except (AgentHostError, OSError) as exc:
            if not self._failing:
                log.warning("heartbeat: the process registry is unreachable: %s", exc)
            self._failing = True
        else:
            if self._failing:
                log.info("heartbeat: the process registry answers again")
            self._failing = False

    def record(self, state: str | None = None) -> ProcessRecord:
        """A record of the process now; each call closes one sample interval."""
        metrics = self.metrics
        now_mono, cpu = time.monotonic(), time.process_time()
        elapsed = max(now_mono - self._last_at, 1e-6)
        turns = sum(metrics.turns.values())
        turns_per_s = round((turns - self._last_turns) / elapsed, 3)
        slowest = p99(metrics.activity.take_durations())
        cpu_percent = round(100.0 * (cpu - self._last_cpu) / elapsed, 1)
        self._last_at, self._last_cpu, self._last_turns = now_mono, cpu, turns
        now = self.clock()
        inflight = metrics.inflight()
        self.history.append(Sample(round(now, 3), turns_per_s, inflight, slowest))
        draining = metrics.draining()
        activity = metrics.activity
        return ProcessRecord(
            process_id=self.process_id,
            address=self.address,
            version=self.version,
            role=self.role,
            started_at=self.started_at,
            heartbeat_at=now,
            state=state or ("draining" if draining else "ready"),
            draining=draining,
            active_connections=metrics.active_connections,
            inflight_turns=inflight,
            turns_per_s=turns_per_s,
            p99_s=slowest,
            cpu_percent=cpu_percent,
            rss_bytes=_rss_bytes(),
            turns_total=turns,
            history=list(self.history),
            recent_turns=activity.recent_turns(),
            rate_limited=dict(activity.rejections),
        )
