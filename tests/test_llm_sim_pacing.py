"""The simulated model's shared pacing ticker: streams share one timer per millisecond of due
tokens, every token keeps its exact offset from the stream's start and none comes early."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

import uvloop

from agenthost.llm.sim_model import SimSettings, SimulatedModel, split_tokens
from agenthost.llm.sim_pacing import PacingTicker, ticker


class CountingLoop(asyncio.SelectorEventLoop):
    """Counts the timers set on it."""

    timers = 0

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        self.timers += 1
        return super().call_at(when, callback, *args, **kw)


async def _paced_streams(
    sim: SimulatedModel, text: str, streams: int, start: float
) -> list[list[float]]:
    """Reads `streams` paced streams of `text` from one start; each token's arrival time."""

    async def one() -> list[float]:
        return [time.monotonic() async for _ in sim.pace(text, start)]

    return list(await asyncio.gather(*(one() for _ in range(streams))))


def test_streams_due_together_share_one_timer_per_token() -> None:
    sim = SimulatedModel(SimSettings(ttft_ms=20, tokens_per_s=100))
    text = "sim: one two three four five six seven"
    tokens = len(split_tokens(text))
    with asyncio.Runner(loop_factory=CountingLoop) as runner:
        loop = runner.get_loop()
        assert isinstance(loop, CountingLoop)
        start = loop.run_until_complete(_now())
        before = loop.timers
        runner.run(_paced_streams(sim, text, 200, start))
        # One timer per token index (a few more if the clock woke a slot early), where a
        # timer per token of every stream was 200 times as many.
        assert loop.timers - before <= 2 * tokens


async def _now() -> float:
    return time.monotonic()


def _assert_on_time(arrivals: list[list[float]], start: float, ttft_s: float, rate: float) -> None:
    for stream in arrivals:
        for i, arrived in enumerate(stream):
            assert arrived >= start + ttft_s + i / rate  # never before its due time


async def test_every_token_keeps_its_offset_from_the_start_and_none_is_early() -> None:
    sim = SimulatedModel(SimSettings(ttft_ms=15, tokens_per_s=200))
    text = " ".join(["word"] * 30)
    start = time.monotonic()
    arrivals = await _paced_streams(sim, text, 50, start)
    assert all(len(stream) == len(split_tokens(text)) for stream in arrivals)
    _assert_on_time(arrivals, start, 0.015, 200)


def test_no_token_is_early_on_uvloop_whose_clock_is_read_once_per_pass() -> None:
    """uvloop rounds a timer's delay to whole milliseconds of a clock read once per pass of
    the loop, so a timer of its own could wake a stream up to a millisecond early."""

    async def run() -> None:
        sim = SimulatedModel(SimSettings(tokens_per_s=300))
        text = " ".join(["word"] * 60)
        for _ in range(3):
            start = time.monotonic()
            # Busy passes make the loop's clock stale when the next timers are set.
            arrivals = await _paced_streams(sim, text, 300, start)
            _assert_on_time(arrivals, start, 0.0, 300)

    uvloop.run(run())


async def test_a_cancelled_waiter_does_not_hold_back_the_others() -> None:
    pacer = ticker()
    assert pacer is ticker()  # one per loop
    due = time.monotonic() + 0.01
    first, second = pacer.at(due), pacer.at(due)
    assert pacer.slots == 1  # the same millisecond: one timer
    first.cancel()
    await asyncio.wait_for(second, 5)
    assert time.monotonic() >= due
    assert pacer.slots == 0


async def test_a_due_time_in_the_past_fires_on_the_next_pass() -> None:
    pacer = PacingTicker(asyncio.get_running_loop())
    await asyncio.wait_for(pacer.at(time.monotonic() - 1.0), 5)
    assert pacer.slots == 0


async def test_a_flood_stream_behind_its_pace_still_yields_the_loop_before_every_token() -> None:
    """Faster than the ticker (a flood), a stream that runs late hands out its due tokens one
    loop pass apart, not as a run in one pass that a writer would send as one frame."""
    sim = SimulatedModel(SimSettings(tokens_per_s=50_000))
    text = " ".join(["word"] * 200)
    passes = 0

    async def count_passes() -> None:
        nonlocal passes
        while True:
            await asyncio.sleep(0)
            passes += 1

    counter = asyncio.create_task(count_passes())
    await asyncio.sleep(0)  # the counter is running
    seen: list[int] = []
    # Started a second ago: every token is already due.
    async for _ in sim.pace(text, time.monotonic() - 1.0):
        seen.append(passes)
    counter.cancel()
    assert len(seen) == len(split_tokens(text))
    # Each token came at least one of the counter's passes after the one before it.
    assert all(later > earlier for earlier, later in itertools.pairwise(seen))
