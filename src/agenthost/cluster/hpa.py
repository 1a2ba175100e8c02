"""The Kubernetes HPA (autoscaling/v2) algorithm as pure functions, for the local fleet's
autoscaler and for capacity simulation.

It follows the controller's rules: desired = ceil(ready pods * average / target) unless the
ratio is within the tolerance; pods without a metric count as at the target when scaling
down and as idle when scaling up (and a recomputed ratio that flips direction means no
change); the recommendation is stabilized over the scale-up window (the smallest recent
one) and the scale-down window (the largest recent one); then rate policies limit the change
relative to the replicas at the start of each policy's period, picking per `selectPolicy`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "DEFAULT_BEHAVIOR",
    "REFERENCE_BEHAVIOR",
    "Autoscaler",
    "Behavior",
    "Decision",
    "ScalingPolicy",
    "ScalingRules",
    "limit_by_policies",
    "metric_replicas",
    "stabilize",
]

TOLERANCE = 0.1


@dataclass(frozen=True)
class ScalingPolicy:
    """At most `value` pods (or percent) of change per `period_seconds`."""

    type: Literal["Pods", "Percent"]
    value: int
    period_seconds: int


@dataclass(frozen=True)
class ScalingRules:
    """One direction's behavior: stabilization window, policies, and how to pick one."""

    stabilization_window_seconds: int
    policies: tuple[ScalingPolicy, ...]
    select_policy: Literal["Max", "Min", "Disabled"] = "Max"


@dataclass(frozen=True)
class Behavior:
    scale_up: ScalingRules
    scale_down: ScalingRules


DEFAULT_BEHAVIOR = Behavior(
    scale_up=ScalingRules(
        0, (ScalingPolicy("Percent", 100, 15), ScalingPolicy("Pods", 4, 15)), "Max"
    ),
    scale_down=ScalingRules(300, (ScalingPolicy("Percent", 100, 15),), "Max"),
)
"""Kubernetes' defaults when an HPA sets no behavior."""

REFERENCE_BEHAVIOR = Behavior(
    scale_up=ScalingRules(30, (ScalingPolicy("Pods", 5, 60),), "Max"),
    scale_down=ScalingRules(300, (ScalingPolicy("Pods", 2, 120),), "Max"),
)
"""The reference design's: up by at most 5 pods a minute after a 30 s window, down by at
most 2 pods per 2 minutes after a 300 s window."""


def metric_replicas(
    current_replicas: int,
    pod_values: Mapping[str, float | None],
    target: float,
    tolerance: float = TOLERANCE,
) -> int:
    """Replicas a per-pod average metric asks for (the replica calculator).

    `pod_values` maps every ready pod to its metric, or None when the pod reported none.
    With no metric at all the answer is `current_replicas` (no decision on no data).
    """
    measured = {pod: v for pod, v in pod_values.items() if v is not None}
    missing = [pod for pod, v in pod_values.items() if v is None]
    if not measured or target <= 0:
        return current_replicas
    ratio = sum(measured.values()) / len(measured) / target
    if not missing:
        if abs(1.0 - ratio) <= tolerance:
            return current_replicas
        return math.ceil(ratio * len(measured))
    filled = dict(measured)
    for pod in missing:
        # Scaling down: assume the silent pods are at the target (scale down less);
        # scaling up: assume they are idle (scale up less).
        filled[pod] = target if ratio < 1.0 else 0.0
    new_ratio = sum(filled.values()) / len(filled) / target
    if abs(1.0 - new_ratio) <= tolerance or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current_replicas
    replicas = math.ceil(new_ratio * len(filled))
    if (new_ratio < 1.0 and replicas > current_replicas) or (
        new_ratio > 1.0 and replicas < current_replicas
    ):
        return current_replicas
    return replicas


def stabilize(
    current: int,
    desired: int,
    recommendations: Sequence[tuple[float, int]],
    behavior: Behavior,
    now: float,
) -> int:
    """The stabilized recommendation: never above the smallest recommendation of the
    scale-up window, never below the largest of the scale-down window (both include
    `desired`)."""
    up_cutoff = now - behavior.scale_up.stabilization_window_seconds
    down_cutoff = now - behavior.scale_down.stabilization_window_seconds
    up, down = desired, desired
    for at, replicas in recommendations:
        if at > up_cutoff:
            up = min(up, replicas)
        if at > down_cutoff:
            down = max(down, replicas)
    recommendation = current
    if recommendation < up:
        recommendation = up
    if recommendation > down:
        recommendation = down
    return recommendation


def _changed_within(events: Sequence[tuple[float, int]], period: int, now: float) -> int:
    cutoff = now - period
    return sum(change for at, change in events if at > cutoff)


def _period_starts(
    rules: ScalingRules,
    current: int,
    up_events: Sequence[tuple[float, int]],
    down_events: Sequence[tuple[float, int]],
    now: float,
) -> list[tuple[ScalingPolicy, int]]:
    """Each policy with the replicas there were at the start of its period."""
    return [
        (
            p,
            current
            - _changed_within(up_events, p.period_seconds, now)
            + _changed_within(down_events, p.period_seconds, now),
        )
        for p in rules.policies
    ]


def limit_by_policies(
    current: int,
    desired: int,
    min_replicas: int,
    max_replicas: int,
    behavior: Behavior,
    up_events: Sequence[tuple[float, int]],
    down_events: Sequence[tuple[float, int]],
    now: float,
) -> int:
    """Apply the rate policies of the direction of change, then the replica bounds.

    `up_events` / `down_events` are (time, pods added / removed) of past scalings.
    """
    if desired > current:
        rules = behavior.scale_up
        if rules.select_policy == "Disabled":
            limit = current
        else:
            proposals = [
                start + p.value if p.type == "Pods" else math.ceil(start * (1 + p.value / 100))
                for p, start in _period_starts(rules, current, up_events, down_events, now)
            ]
            limit = max(proposals) if rules.select_policy == "Max" else min(proposals)
            limit = max(limit, current)
        return min(desired, limit, max_replicas)
    if desired < current:
        rules = behavior.scale_down
        if rules.select_policy == "Disabled":
            limit = current
        else:
            proposals = [
                start - p.value if p.type == "Pods" else int(start * (1 - p.value / 100))
                for p, start in _period_starts(rules, current, up_events, down_events, now)
            ]
            # "Max" means the policy allowing the most change: the lowest limit.
            limit = min(proposals) if rules.select_policy == "Max" else max(proposals)
            limit = min(limit, current)
        return max(desired, limit, min_replicas)
    return max(min(desired, max_replicas), min_replicas)


@dataclass
class Decision:
    """One evaluation with everything it was based on, for the decision log."""

    at: float
    current: int
    desired: int
    metric_replicas: int
    stabilized: int
    average: float | None
    target: float
    reason: str


@dataclass
class Autoscaler:
    """Keeps the history the algorithm needs (recommendations, scale events) between
    evaluations; `decide` is called every sync period with fresh per-pod metrics."""

    min_replicas: int
    max_replicas: int
    target: float
    behavior: Behavior = DEFAULT_BEHAVIOR
    tolerance: float = TOLERANCE
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    up_events: list[tuple[float, int]] = field(default_factory=list)
    down_events: list[tuple[float, int]] = field(default_factory=list)

    def decide(self, now: float, current: int, pod_values: Mapping[str, float | None]) -> Decision:
        measured = [v for v in pod_values.values() if v is not None]
        average = sum(measured) / len(measured) if measured else None
        if current == 0 and self.min_replicas != 0:
            return Decision(now, 0, 0, 0, 0, average, self.target, "scaled to zero: disabled")
        if current > self.max_replicas:
            return Decision(
                now, current, self.max_replicas, current, current, average, self.target,
                "above max replicas",
            )  # fmt: skip
        if current < self.min_replicas:
            return Decision(
                now, current, self.min_replicas, current, current, average, self.target,
                "below min replicas",
            )  # fmt: skip
        wanted = metric_replicas(current, pod_values, self.target, self.tolerance)
        stabilized = stabilize(current, wanted, self.recommendations, self.behavior, now)
        self._remember(now, wanted)
        desired = limit_by_policies(
            current, stabilized, self.min_replicas, self.max_replicas, self.behavior,
            self.up_events, self.down_events, now,
        )  # fmt: skip
        if average is None:
            reason = "no metrics: no change"
        elif desired == current:
            reason = "within tolerance or held by stabilization or policy"
        else:
            reason = "scale up" if desired > current else "scale down"
        return Decision(now, current, desired, wanted, stabilized, average, self.target, reason)

    def record_scale(self, now: float, old: int, new: int) -> None:
        """Call after applying a decision, so rate policies see it."""
        if new > old:
            self.up_events.append((now, new - old))
        elif new < old:
            self.down_events.append((now, old - new))
        horizon = now - self._longest_period()
        self.up_events = [e for e in self.up_events if e[0] > horizon]
        self.down_events = [e for e in self.down_events if e[0] > horizon]

    def _remember(self, now: float, replicas: int) -> None:
        horizon = now - max(
            self.behavior.scale_up.stabilization_window_seconds,
            self.behavior.scale_down.stabilization_window_seconds,
        )
        self.recommendations = [r for r in self.recommendations if r[0] > horizon]
        self.recommendations.append((now, replicas))

    def _longest_period(self) -> int:
        periods = [p.period_seconds for p in self.behavior.scale_up.policies]
        periods += [p.period_seconds for p in self.behavior.scale_down.policies]
        return max(periods, default=0)
