"""How late this process's event loop runs, and how long the garbage collector stops it: two
waits that land on a turn's latency where no operation's timer sees them.

A probe task asks to sleep `period` seconds and records how much later than asked it woke:
the time the loop spent on everything queued ahead of it (`agenthost_event_loop_lag_seconds`).
`gc.callbacks` time every collection, by generation (`agenthost_gc_pause_seconds`): with
thousands of sessions in flight a full collection walks every live object, and the loop
stands still for as long. Added to find what the p99 of 10,000 concurrent sessions waits on
(issue 21); it costs one timer per period and two clock reads per collection.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from typing import Any

from agenthost.observability.metrics import Histogram

__all__ = ["LoopHealth"]


class LoopHealth:
    """Feeds `lag` from a probe on the running loop and `gc_pauses[generation]` from the
    collector's callbacks, between `start()` and `stop()`."""

    def __init__(
        self, lag: Histogram, gc_pauses: dict[str, Histogram], period: float = 0.1
    ) -> None:
        self.lag = lag
        self.gc_pauses = gc_pauses
        self.period = period
        self._probe: asyncio.Task[None] | None = None
        self._gc_started = 0.0

    def start(self) -> None:
        """Begin measuring (call on the loop to watch)."""
        if self._probe is None:
            self._probe = asyncio.get_running_loop().create_task(self._watch(), name="loop-lag")
            gc.callbacks.append(self._on_gc)

    async def stop(self) -> None:
        probe, self._probe = self._probe, None
        if probe is None:
            return
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        probe.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probe

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.period
            await asyncio.sleep(self.period)
            self.lag.observe(max(0.0, loop.time() - due))

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        histogram = self.gc_pauses.get(str(info.get("generation")))
        if histogram is not None and self._gc_started:
            histogram.observe(time.perf_counter() - self._gc_started)
