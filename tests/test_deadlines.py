"""The header and body deadlines of a process's connections, kept by one sweep
(agenthost.runtime.lean_protocols.Deadlines)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from agenthost.runtime.connection_limits import ConnectionLimits
from agenthost.runtime.lean_protocols import ConnectionGuard, Deadlines
from tests.fixtures.agenthost import async_wait_until


class FakeTransport:
    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


class FakeGuard:
    def __init__(self, fails: bool = False) -> None:
        self.expired: list[tuple[str, float]] = []
        self.fails = fails
        self.transport = FakeTransport()

    def _expired(self, reason: str) -> None:
        self.expired.append((reason, time.monotonic()))
        if self.fails:
            raise RuntimeError("the cut failed")


class CountingLoop:
    """The running loop, counting the timers started through it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.timers = 0

    def time(self) -> float:
        return self.loop.time()

    def call_later(self, delay: float, callback: Any) -> asyncio.TimerHandle:
        self.timers += 1
        return self.loop.call_later(delay, callback)


def _limits(timeout: float) -> ConnectionLimits:
    return ConnectionLimits(
        header_timeout=timeout, body_timeout=timeout, keep_alive_timeout=5.0,
        max_connections=100, probe_header_timeout=timeout,
    )  # fmt: skip


def _guard(fake: FakeGuard) -> ConnectionGuard:
    return cast(ConnectionGuard, fake)


async def test_many_deadlines_share_one_timer_and_fire_after_they_are_due() -> None:
    counting = CountingLoop(asyncio.get_running_loop())
    deadlines = Deadlines(cast(asyncio.AbstractEventLoop, counting), _limits(0.4))
    assert deadlines.period == 0.1
    guards = [FakeGuard() for _ in range(1000)]
    armed_at = time.monotonic()
    for i, guard in enumerate(guards):
        deadlines.arm(_guard(guard), 0.4, "headers_timeout")
        if i % 2:
            deadlines.arm(_guard(guard), 0.4, "body_timeout")  # re-armed: one entry
    assert len(deadlines.due) == 1000
    assert counting.timers == 1  # one sweep timer for 1,500 armings
    kept = guards[:10]
    for guard in kept:
        deadlines.disarm(_guard(guard))
    await async_wait_until(lambda: not deadlines.due, 10, "every deadline to pass")
    for i, guard in enumerate(guards):
        if guard in kept:
            assert guard.expired == []
            continue
        ((reason, when),) = guard.expired
        assert reason == ("body_timeout" if i % 2 else "headers_timeout")
        assert when - armed_at >= 0.4  # never before it is due
    assert deadlines._sweep_timer is None  # nothing pending: no timer runs


async def test_a_cut_that_fails_aborts_its_connection_and_the_others_still_expire() -> None:
    deadlines = Deadlines(asyncio.get_running_loop(), _limits(0.2))
    failing, early, late = FakeGuard(fails=True), FakeGuard(), FakeGuard()
    deadlines.arm(_guard(failing), 0.2, "headers_timeout")
    deadlines.arm(_guard(early), 0.2, "headers_timeout")
    deadlines.arm(_guard(late), 0.6, "body_timeout")  # due at a later sweep
    await async_wait_until(lambda: not deadlines.due, 10, "every deadline to pass")
    assert failing.transport.aborted and [r for r, _ in failing.expired] == ["headers_timeout"]
    assert [r for r, _ in early.expired] == ["headers_timeout"] and not early.transport.aborted
    assert [r for r, _ in late.expired] == ["body_timeout"]
