"""The local fleet's autoscaler: the HPA algorithm of `agenthost.cluster.hpa` fed with each
replica's own metric, applied through `scale`, every decision logged with its inputs and
written to the fleet's process registry (what /dashboard shows under "Autoscaler")."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from collections.abc import Callable

from agenthost.cluster.fleet import scale
from agenthost.cluster.hpa import REFERENCE_BEHAVIOR, Autoscaler, Behavior
from agenthost.cluster.state import load
from agenthost.core.errors import AgentHostError
from agenthost.registry import AutoscaleDecision, create_registry

__all__ = ["parse_spec", "read_metric", "record_decision", "run_autoscaler"]

logger = logging.getLogger("agenthost.autoscaler")


def parse_spec(spec: str) -> tuple[int, int, float]:
    """`min=1,max=8,target=100` -> (1, 8, 100.0); ValueError names what is wrong."""
    values: dict[str, str] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"autoscale spec part {part!r} is not key=value")
        values[key.strip()] = value.strip()
    unknown = set(values) - {"min", "max", "target"}
    if unknown or {"min", "max", "target"} - set(values):
        raise ValueError("autoscale spec must be min=N,max=N,target=VALUE")
    low, high, target = int(values["min"]), int(values["max"]), float(values["target"])
    if not 1 <= low <= high or target <= 0:
        raise ValueError("autoscale needs 1 <= min <= max and target > 0")
    return low, high, target


def read_metric(port: int, metric: str) -> float | None:
    """The replica's value of `metric`, or None if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == metric:
            return float(value)
    return None


def run_autoscaler(
    directory: str,
    spec: str,
    *,
    metric: str = "agenthost_active_connections",
    period: float = 15.0,
    log: Callable[[str], None] = print,
    should_stop: Callable[[], bool] = lambda: False,
    behavior: Behavior = REFERENCE_BEHAVIOR,
) -> None:
    """Evaluate every `period` seconds until `should_stop()`; scale when the HPA says so."""
    low, high, target = parse_spec(spec)
    scaler = Autoscaler(min_replicas=low, max_replicas=high, target=target, behavior=behavior)
    while not should_stop():
        state = load(directory)
        values = {f"r{r.slot}": read_metric(r.port, metric) for r in state.replicas}
        now = time.monotonic()
        current = len(state.replicas)
        decision = scaler.decide(now, current, values)
        inputs = {"metric": metric, "values": values, "average": decision.average,
                  "target": target, "recommended": decision.metric_replicas,
                  "stabilized": decision.stabilized}  # fmt: skip
        log(json.dumps({"autoscale": decision.reason, "current": current,
                        "desired": decision.desired, **inputs}))  # fmt: skip
        record_decision(
            state.store,
            AutoscaleDecision(
                at=time.time(),
                reason=decision.reason,
                current=current,
                desired=decision.desired,
                inputs=inputs,
            ),
        )
        if decision.desired != current:
            scale(directory, decision.desired, log=log)
            scaler.record_scale(now, current, decision.desired)
        deadline = time.monotonic() + period
        while time.monotonic() < deadline and not should_stop():
            time.sleep(min(0.5, period))


def record_decision(store: str, decision: AutoscaleDecision) -> None:
    """Append `decision` to the registry in the fleet's store (a store that cannot be
    reached costs the dashboard one row, never the autoscaler its run)."""

    async def write() -> None:
        registry = create_registry(store)
        await registry.open()
        try:
            await registry.add_decision(decision)
        finally:
            await registry.close()

    try:
        asyncio.run(write())
    except (AgentHostError, OSError, ValueError) as exc:
        logger.warning("could not record the autoscaler's decision: %s", exc)
