"""The HPA algorithm against the examples of the Kubernetes documentation."""

from __future__ import annotations

from agenthost.cluster.hpa import (
    DEFAULT_BEHAVIOR,
    REFERENCE_BEHAVIOR,
    Autoscaler,
    Behavior,
    ScalingPolicy,
    ScalingRules,
    limit_by_policies,
    metric_replicas,
    stabilize,
)


def pods(*values: float | None) -> dict[str, float | None]:
    return {f"pod-{i}": v for i, v in enumerate(values)}


def test_ratio_sets_the_replicas_doubling_and_halving() -> None:
    # "current 200m, desired 100m: replicas doubled; 50m: halved"
    assert metric_replicas(4, pods(200, 200, 200, 200), 100) == 8
    assert metric_replicas(4, pods(50, 50, 50, 50), 100) == 2
    assert metric_replicas(3, pods(150, 150, 160), 100) == 5  # ceil(1.533 * 3)


def test_within_tolerance_nothing_changes() -> None:
    assert metric_replicas(10, pods(*[109] * 10), 100) == 10
    assert metric_replicas(10, pods(*[91] * 10), 100) == 10
    assert metric_replicas(10, pods(*[111] * 10), 100) == 12


def test_missing_metrics_are_conservative_in_both_directions() -> None:
    # Scaling down: silent pods count as at the target.
    assert metric_replicas(4, pods(10, 10, None, None), 100) == 3  # (10+10+100+100)/4/100*4
    # Scaling up: silent pods count as idle.
    assert metric_replicas(4, pods(300, 300, None, None), 100) == 6
    # The fill flips the direction: no change.
    assert metric_replicas(3, pods(150, None, None), 100) == 3
    # No metric at all: no decision.
    assert metric_replicas(5, pods(None, None), 100) == 5


def test_scale_down_stabilization_takes_the_highest_recent_recommendation() -> None:
    history = [(0.0, 10), (100.0, 8), (200.0, 6)]
    assert stabilize(10, 4, history, DEFAULT_BEHAVIOR, now=250.0) == 10
    # Once the 10 is older than the 300 s window, the highest left is 8.
    assert stabilize(10, 4, history, DEFAULT_BEHAVIOR, now=301.0) == 8
    # Scale up is not held back by the default (0 s) up window.
    assert stabilize(4, 9, history, DEFAULT_BEHAVIOR, now=250.0) == 9


def test_scale_up_stabilization_takes_the_lowest_recent_recommendation() -> None:
    behavior = Behavior(
        ScalingRules(60, DEFAULT_BEHAVIOR.scale_up.policies), DEFAULT_BEHAVIOR.scale_down
    )
    assert stabilize(2, 9, [(10.0, 3), (40.0, 7)], behavior, now=50.0) == 3
    assert stabilize(2, 9, [(10.0, 3), (40.0, 7)], behavior, now=80.0) == 7


def test_default_scale_up_picks_the_policy_allowing_the_most_change() -> None:
    # 100% per 15 s or 4 pods per 15 s, Max: from 1 replica, +4 wins; from 10, +100% wins.
    assert limit_by_policies(1, 50, 1, 100, DEFAULT_BEHAVIOR, [], [], now=0) == 5
    assert limit_by_policies(10, 50, 1, 100, DEFAULT_BEHAVIOR, [], [], now=0) == 20
    assert limit_by_policies(10, 50, 1, 15, DEFAULT_BEHAVIOR, [], [], now=0) == 15  # max bound


def test_scale_down_policies_from_the_documentation() -> None:
    # Pods 4 per 60 s and Percent 10 per 60 s, Max: at 80 replicas 10% (8) wins; at 72 the
    # 7.2 is rounded to 8; below 40 the 4-pod policy allows more.
    behavior = Behavior(
        DEFAULT_BEHAVIOR.scale_up,
        ScalingRules(0, (ScalingPolicy("Pods", 4, 60), ScalingPolicy("Percent", 10, 60))),
    )
    assert limit_by_policies(80, 1, 1, 100, behavior, [], [], now=0) == 72
    assert limit_by_policies(72, 1, 1, 100, behavior, [], [], now=1000) == 64
    assert limit_by_policies(30, 1, 1, 100, behavior, [], [], now=2000) == 26
    # selectPolicy Min: the least change.
    least = Behavior(behavior.scale_up, ScalingRules(0, behavior.scale_down.policies, "Min"))
    assert limit_by_policies(80, 1, 1, 100, least, [], [], now=0) == 76


def test_rate_policies_count_changes_made_within_their_period() -> None:
    # Reference design: down by at most 2 pods per 120 s.
    down = [(100.0, 2)]  # already removed 2 pods 20 s ago
    assert limit_by_policies(6, 1, 1, 10, REFERENCE_BEHAVIOR, [], down, now=120.0) == 6
    assert limit_by_policies(6, 1, 1, 10, REFERENCE_BEHAVIOR, [], down, now=221.0) == 4
    # Up by at most 5 per 60 s.
    up = [(0.0, 5)]
    assert limit_by_policies(6, 20, 1, 20, REFERENCE_BEHAVIOR, up, [], now=30.0) == 6
    assert limit_by_policies(6, 20, 1, 20, REFERENCE_BEHAVIOR, up, [], now=61.0) == 11


def test_disabled_direction_never_scales_that_way() -> None:
    behavior = Behavior(DEFAULT_BEHAVIOR.scale_up, ScalingRules(0, (), "Disabled"))
    assert limit_by_policies(5, 1, 1, 10, behavior, [], [], now=0) == 5
    assert limit_by_policies(5, 9, 1, 10, behavior, [], [], now=0) == 9


def test_autoscaler_follows_load_up_and_down_with_its_windows() -> None:
    scaler = Autoscaler(min_replicas=1, max_replicas=8, target=100, behavior=REFERENCE_BEHAVIOR)
    replicas, now = 1, 0.0
    log = []
    # Load of 400 connections in all: per-pod average 400 / replicas.
    for _ in range(20):
        decision = scaler.decide(now, replicas, {f"p{i}": 400 / replicas for i in range(replicas)})
        log.append(decision)
        scaler.record_scale(now, replicas, decision.desired)
        replicas = decision.desired
        now += 15
    assert replicas == 4, [d.desired for d in log]
    assert all(d.average is not None and d.target == 100 for d in log)
    # With no history the first recommendation applies at once (as in Kubernetes).
    assert log[0].desired == 4
    # Load drops to 50 in all: down only after the 300 s window, 2 pods per 2 minutes.
    down_started = None
    dropped_at = now
    for _ in range(60):
        decision = scaler.decide(now, replicas, {f"p{i}": 50 / replicas for i in range(replicas)})
        if decision.desired < replicas and down_started is None:
            down_started = now
        scaler.record_scale(now, replicas, decision.desired)
        replicas = decision.desired
        now += 15
    assert replicas == 1
    # The last high recommendation came 15 s before the drop: it holds for 300 s.
    assert down_started is not None and down_started >= dropped_at + 285


def test_bounds_and_scaled_to_zero() -> None:
    scaler = Autoscaler(min_replicas=2, max_replicas=5, target=100)
    assert scaler.decide(0, 9, pods(500)).desired == 5
    assert scaler.decide(0, 1, pods(1)).desired == 2
    assert scaler.decide(0, 0, {}).desired == 0
