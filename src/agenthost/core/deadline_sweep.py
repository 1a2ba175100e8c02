"""Many deadlines kept by one timer: arming one is a dict entry, and one timer runs while any
is pending, firing each within a sweep period after it is due, never before.

A timer per deadline (a handle, a libuv timer and a copied context, started and cancelled
about once a request) is a visible share of a request's CPU where requests are cheap: the
server's header and body deadlines (`runtime/lean_protocols.py`) and the load tester's
request timeouts (`loadtest/lean_http.py`) are kept here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["DeadlineSweep"]

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


class DeadlineSweep(Generic[K]):
    """The deadlines of keys `K`, each with a reason handed to `expired(key, reason)` when it
    passes. `loop` is the running loop's when not given."""

    def __init__(
        self,
        period: float,
        expired: Callable[[K, str], None],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.period = period
        self.expired = expired
        self.loop = loop
        self.due: dict[K, tuple[float, str]] = {}
        self._sweep_timer: asyncio.TimerHandle | None = None

    def arm(self, key: K, delay: float, reason: str = "") -> None:
        """`key`'s deadline is `delay` seconds from now (replacing any it had)."""
        loop = self.loop
        if loop is None:
            loop = self.loop = asyncio.get_running_loop()
        self.due[key] = (loop.time() + delay, reason)
        if self._sweep_timer is None:
            self._sweep_timer = loop.call_later(self.period, self._sweep)

    def disarm(self, key: K) -> None:
        self.due.pop(key, None)

    def stop(self) -> None:
        """Forget every deadline and stop the timer."""
        self.due.clear()
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None

    def _sweep(self) -> None:
        self._sweep_timer = None
        assert self.loop is not None
        now = self.loop.time()
        passed = [(key, reason) for key, (when, reason) in self.due.items() if when <= now]
        for key, _ in passed:
            del self.due[key]
        # The next sweep is set before any `expired` runs, so that one that raises cannot
        # leave the other deadlines without a timer.
        if self.due:
            self._sweep_timer = self.loop.call_later(self.period, self._sweep)
        for key, reason in passed:
            try:
                self.expired(key, reason)
            except Exception:
                log.exception("a deadline's expiry (%s) failed", reason or "timeout")
