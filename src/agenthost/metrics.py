"""Process metrics in the Prometheus text format, kept without a client library.

Counting a turn costs a dict update and a bisect, and nothing is locked: everything runs on
the event loop thread. The names are the ones an autoscaler reads
(`agenthost_active_connections`, `agenthost_inflight_turns`).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

__all__ = ["DURATION_BUCKETS", "Metrics"]

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The counters, gauges and histogram of one server process."""

    def __init__(self) -> None:
        self.turns: dict[str, int] = {}
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0
        self.duration_count = 0
        self.open_streams = 0
        self.open_websockets = 0
        self.inflight: Callable[[], int] = lambda: 0
        self.draining: Callable[[], bool] = lambda: False

    def turn_finished(self, outcome: str, seconds: float) -> None:
        """Count a turn by outcome (completed, replayed, failed, interrupted, rejected, ...)."""
        self.turns[outcome] = self.turns.get(outcome, 0) + 1
        self.buckets[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.duration_sum += seconds
        self.duration_count += 1

    @property
    def active_connections(self) -> int:
        return self.open_streams + self.open_websockets

    def render(self) -> bytes:
        """The exposition text."""
        out = [
            "# HELP agenthost_active_connections Open WebSocket connections and event streams.",
            "# TYPE agenthost_active_connections gauge",
            f"agenthost_active_connections {self.active_connections}",
            "# HELP agenthost_inflight_turns Turns admitted and not yet finished.",
            "# TYPE agenthost_inflight_turns gauge",
            f"agenthost_inflight_turns {self.inflight()}",
            "# HELP agenthost_draining 1 while this process drains.",
            "# TYPE agenthost_draining gauge",
            f"agenthost_draining {int(self.draining())}",
            "# HELP agenthost_turns_total Turns finished, by outcome.",
            "# TYPE agenthost_turns_total counter",
        ]
        for outcome in sorted(self.turns):
            out.append(f'agenthost_turns_total{{outcome="{outcome}"}} {self.turns[outcome]}')
        out += [
            "# HELP agenthost_turn_duration_seconds Time from admission to answer.",
            "# TYPE agenthost_turn_duration_seconds histogram",
        ]
        cumulative = 0
        for bound, count in zip(DURATION_BUCKETS, self.buckets, strict=False):
            cumulative += count
            out.append(f'agenthost_turn_duration_seconds_bucket{{le="{bound:g}"}} {cumulative}')
        out.append(f'agenthost_turn_duration_seconds_bucket{{le="+Inf"}} {self.duration_count}')
        out.append(f"agenthost_turn_duration_seconds_sum {self.duration_sum:.6f}")
        out.append(f"agenthost_turn_duration_seconds_count {self.duration_count}")
        return ("\n".join(out) + "\n").encode()
