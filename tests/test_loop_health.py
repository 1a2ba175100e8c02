"""The event-loop lag probe and the garbage-collector pause timer (observability.loop_health)."""

from __future__ import annotations

import asyncio
import gc
import time

from agenthost.observability.loop_health import LoopHealth
from agenthost.observability.metrics import FAST_BUCKETS, Histogram, Metrics
from tests.fixtures.agenthost import async_wait_until


async def test_a_blocked_loop_shows_as_lag() -> None:
    lag = Histogram(FAST_BUCKETS)
    health = LoopHealth(lag, {}, period=0.01)
    health.start()
    try:
        await async_wait_until(lambda: lag.count >= 1, 10, "the probe to run")
        _hold_the_loop(0.3)  # what a long callback or a GC pause does
        await async_wait_until(lambda: lag.sum >= 0.25, 10, "the late wake to be recorded")
    finally:
        await health.stop()
    assert lag.counts[-1] + lag.counts[FAST_BUCKETS.index(0.5)] >= 1  # one wake 0.25-0.5 s late


async def test_every_collection_is_timed_by_generation_until_stopped() -> None:
    metrics = Metrics()
    health = LoopHealth(metrics.loop_lag, metrics.gc_pauses)
    health.start()
    gc.collect(2)
    gc.collect(0)
    assert metrics.gc_pauses["2"].count >= 1
    assert metrics.gc_pauses["0"].count >= 1
    await health.stop()
    before = metrics.gc_pauses["2"].count
    gc.collect(2)
    assert metrics.gc_pauses["2"].count == before
    text = metrics.render().decode()
    assert 'agenthost_gc_pause_seconds_count{generation="2"}' in text
    assert "agenthost_event_loop_lag_seconds_count" in text


def test_starting_twice_watches_once_and_stop_removes_the_gc_callback() -> None:
    health = LoopHealth(Histogram(FAST_BUCKETS), {})
    asyncio.run(_start_and_stop(health))
    assert health not in [getattr(cb, "__self__", None) for cb in gc.callbacks]


async def _start_and_stop(health: LoopHealth) -> None:
    health.start()
    health.start()  # twice: still one probe and one callback
    assert [getattr(cb, "__self__", None) for cb in gc.callbacks].count(health) == 1
    await health.stop()


def _hold_the_loop(seconds: float) -> None:
    """Keep the thread busy, as a long synchronous callback would."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
