"""The simulated model's pacing: one timer per millisecond that has tokens due, shared by every
stream of the event loop, instead of one timer per token of every stream.

At 1,000 streams of 30 tokens/s a process set and cancelled 30,000 timers a second, each a
handle in the loop's heap and a `sleep` coroutine around it. Here a stream waits on a bare
future filed under the millisecond its token is due in (`due` rounded up), and one timer per
such millisecond wakes every stream filed there: at most 1,000 timers a second however many
streams there are. A waiter that finds itself woken before its due time (a loop whose clock
is read once per pass can fire a timer a little early) waits again, so a token is never
early; it is late by at most the rounding (under 1 ms) plus the loop's own lag, as with a
timer of its own.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref

__all__ = ["TICK_S", "PacingTicker", "ticker"]

_RESOLUTION = 1000  # slots per second: a slot is one millisecond of due times
TICK_S = 1 / _RESOLUTION
"""The ticker's resolution: a model faster than a token per tick is paced otherwise."""


class PacingTicker:
    """Wakes the futures filed under each millisecond slot once that slot's time has come.

    Times are `time.monotonic()` seconds, the clock the simulated model paces by."""

    __slots__ = ("_loop", "_slots")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._slots: dict[int, list[asyncio.Future[None]]] = {}

    def at(self, due: float) -> asyncio.Future[None]:
        """A future resolved at `due` or up to a millisecond after it (later if the loop
        lags); cancelling it only drops it from its slot's wake-up."""
        future: asyncio.Future[None] = self._loop.create_future()
        slot = math.ceil(due * _RESOLUTION)
        waiting = self._slots.get(slot)
        if waiting is None:
            self._slots[slot] = [future]
            delay = slot / _RESOLUTION - time.monotonic()
            self._loop.call_later(max(0.0, delay), self._fire, slot)
        else:
            waiting.append(future)
        return future

    def _fire(self, slot: int) -> None:
        for future in self._slots.pop(slot, ()):
            if not future.done():
                future.set_result(None)

    @property
    def slots(self) -> int:
        """Slots with streams waiting (one timer each)."""
        return len(self._slots)


_tickers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, PacingTicker] = (
    weakref.WeakKeyDictionary()
)


def ticker(loop: asyncio.AbstractEventLoop | None = None) -> PacingTicker:
    """The ticker of `loop` (default: the running loop), made on first use."""
    loop = loop or asyncio.get_running_loop()
    found = _tickers.get(loop)
    if found is None:
        found = _tickers[loop] = PacingTicker(loop)
    return found
