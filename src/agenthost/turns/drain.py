"""Drain: stop taking new work, let in-flight turns finish and commit, then let the process
exit — what a rolling update or a scale-down needs so no turn is lost.

`/readyz` answers 503 from the moment a drain starts, so load balancers stop sending; new
turns get 503 `draining` with Retry-After (clients and balancers retry elsewhere). A turn
still running at `--drain-timeout` is cancelled: its lease is released and its user message
kept (status failed, code interrupted), so a retry on another process completes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from agenthost.turns.engine import TurnEngine

__all__ = ["Drain"]

log = logging.getLogger("agenthost.drain")


class Drain:
    """One process's drain; `start()` is idempotent."""

    def __init__(
        self,
        engine: TurnEngine,
        timeout: float,
        *,
        on_start: Sequence[Callable[[], None]] = (),
        cancel: Callable[[str], int] | None = None,
    ) -> None:
        self.engine = engine
        self.timeout = timeout
        self.on_start = tuple(on_start)
        # What stops the turns still running at the timeout: the engine's cancel (each ends
        # as failed/interrupted), or a queue worker's hand-back (each is run again elsewhere).
        self.cancel = cancel or engine.cancel_all
        self._task: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()

    @property
    def started(self) -> bool:
        return self._task is not None

    def start(self, reason: str) -> None:
        if self._task is None:
            log.info("draining (%s): %d turns in flight", reason, self.engine.inflight)
            self.engine.draining = True
            for callback in self.on_start:
                callback()
            self._task = asyncio.create_task(self._run(), name="drain")

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        if not await self.engine.wait_idle(self.timeout):
            cancelled = self.cancel("the process drained before the turn ended")
            log.warning("drain timeout after %g s: cancelled %d turns", self.timeout, cancelled)
            await self.engine.wait_idle(10.0)
        log.info("drained")
        self._drained.set()

    async def drained(self) -> None:
        """Return once a drain has started and completed (the process may exit)."""
        await self._drained.wait()
