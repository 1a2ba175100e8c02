"""What a process did lately, for the dashboard: its last turns (status, duration, tenant;
the message and answer only with `--log-content`) and its rate-limit refusals by tenant.

Unlike the Prometheus metrics, these name tenants: they are shown to the fleet's admin,
never exported as label values. Both are bounded, so a process holds the same few kilobytes
whatever its traffic.
"""

from __future__ import annotations

import time
from collections import deque

import msgspec

__all__ = ["ANONYMOUS", "MAX_DURATIONS", "MAX_TENANTS", "RECENT_TURNS", "Activity", "TurnSample"]

RECENT_TURNS = 30
"""Turns a process keeps for the dashboard."""

MAX_TENANTS = 200
"""Tenants whose refusals are counted one by one; the rest are counted under `(others)`."""

MAX_DURATIONS = 20_000
"""Turn durations kept between two heartbeats (for their p99); past it, every other one."""

ANONYMOUS = "(anonymous)"


class TurnSample(msgspec.Struct, omit_defaults=True):
    """One finished turn as the dashboard shows it."""

    at: float
    status: str
    seconds: float
    tenant: str | None = None
    session_id: str | None = None
    turn_id: str | None = None
    message: str | None = None
    response: str | None = None


_Turn = tuple[float, str, float, str | None, str, str, str | None, str | None]


class Activity:
    def __init__(self, *, log_content: bool = False, keep: int = RECENT_TURNS) -> None:
        self.log_content = log_content
        self.recent: deque[_Turn] = deque(maxlen=keep)
        self.rejections: dict[str, int] = {}
        self.durations: list[float] = []
        self._thinning = 1
        self._skipped = 0

    def turn_finished(
        self,
        status: str,
        seconds: float,
        *,
        tenant: str | None,
        session_id: str,
        turn_id: str,
        message: str | None = None,
        response: str | None = None,
    ) -> None:
        """Note a finished turn: a tuple on the turn's path; the struct is built by
        `recent_turns`, once per heartbeat."""
        self._keep_duration(seconds)
        if not self.log_content:
            message = response = None
        self.recent.append(
            (time.time(), status, seconds, tenant, session_id, turn_id, message, response)
        )

    def rate_limited(self, tenant: str | None) -> None:
        name = tenant or ANONYMOUS
        if name not in self.rejections and len(self.rejections) >= MAX_TENANTS:
            name = "(others)"
        self.rejections[name] = self.rejections.get(name, 0) + 1

    def recent_turns(self) -> list[TurnSample]:
        return [
            TurnSample(
                at=at,
                status=status,
                seconds=round(seconds, 4),
                tenant=tenant or ANONYMOUS,
                session_id=session_id,
                turn_id=turn_id,
                message=message,
                response=response,
            )
            for at, status, seconds, tenant, session_id, turn_id, message, response in self.recent
        ]

    def take_durations(self) -> list[float]:
        """The turn durations since the last call (a sample, past MAX_DURATIONS)."""
        taken, self.durations = self.durations, []
        self._thinning, self._skipped = 1, 0
        return taken

    def _keep_duration(self, seconds: float) -> None:
        self._skipped += 1
        if self._skipped < self._thinning:
            return
        self._skipped = 0
        self.durations.append(seconds)
        if len(self.durations) >= MAX_DURATIONS:  # keep every other one from now on
            del self.durations[::2]
            self._thinning *= 2
