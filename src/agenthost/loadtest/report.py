"""The load test's result: counts, throughput, latency percentiles, verification, client CPU;
as one JSON object, as a table, and as a timeline for the plot."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import msgspec
from rich.table import Table

from agenthost.loadtest.config import LoadConfig
from agenthost.loadtest.verify import Verification

__all__ = ["LoadReport", "Percentiles", "percentiles", "report_table", "timeline"]


class Percentiles(msgspec.Struct):
    p50: float
    p90: float
    p99: float
    max: float
    mean: float


def percentiles(values_ms: Sequence[float]) -> Percentiles | None:
    if not values_ms:
        return None
    ordered = sorted(values_ms)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 2)

    mean = round(sum(ordered) / len(ordered), 2)
    return Percentiles(at(0.50), at(0.90), at(0.99), round(ordered[-1], 2), mean)


class TimelinePoint(msgspec.Struct):
    second: int
    turns: int
    p50_ms: float
    p99_ms: float


def timeline(done: Sequence[tuple[float, float]]) -> list[TimelinePoint]:
    """Per second of the run: (offset s, latency ms) of answered turns -> points."""
    buckets: dict[int, list[float]] = {}
    for offset, latency in done:
        buckets.setdefault(int(offset), []).append(latency)
    points = []
    for second in range(0, max(buckets, default=-1) + 1):
        values = buckets.get(second, [])
        p = percentiles(values)
        points.append(TimelinePoint(second, len(values), p.p50 if p else 0.0, p.p99 if p else 0.0))
    return points


class LoadReport(msgspec.Struct):
    config: LoadConfig
    started_at: str
    wall_s: float
    sent: int
    answered: int
    failed: int
    retries: int
    failed_by_kind: dict[str, int]
    retried_by_kind: dict[str, int]
    turns_per_s: float
    latency_ms: Percentiles | None
    first_chunk_ms: Percentiles | None
    verification: Verification | None
    client_cpu_s: float
    client_cpu_pct: float
    saturated: bool
    warnings: list[str]
    timeline: list[TimelinePoint]

    @property
    def ok(self) -> bool:
        return self.failed == 0 and (self.verification is None or self.verification.clean)

    def to_json(self) -> bytes:
        """The report as JSON; an API key never leaves the process."""
        shown = msgspec.structs.replace(
            self,
            config=msgspec.structs.replace(
                self.config, api_key="***" if self.config.api_key else None
            ),
        )
        return msgspec.json.format(msgspec.json.encode(shown))


def report_table(report: LoadReport) -> Table:
    table = Table(title=f"agenthost loadtest: {report.config.url} ({report.config.mode})")
    table.add_column("what")
    table.add_column("value", justify="right")
    v = report.verification
    rows: list[tuple[str, Any]] = []
    if v is not None:
        rows += [
            ("lost", v.lost),
            ("duplicated", v.duplicated),
            ("out of order", v.out_of_order),
            ("mismatched answers", v.mismatched),
            ("unreadable sessions", v.unreadable),
            ("in history, unacknowledged", v.unacknowledged_present),
        ]
    rows += [
        ("turns answered / sent", f"{report.answered} / {report.sent}"),
        ("failed", f"{report.failed} {report.failed_by_kind or ''}"),
        ("retried", f"{report.retries} {report.retried_by_kind or ''}"),
        ("turns/s", f"{report.turns_per_s:.1f}"),
    ]
    if report.latency_ms:
        lat = report.latency_ms
        rows.append(("latency p50 / p99 / max ms", f"{lat.p50} / {lat.p99} / {lat.max}"))
    if report.first_chunk_ms:
        f = report.first_chunk_ms
        rows.append(("first chunk p50 / p99 ms", f"{f.p50} / {f.p99}"))
    rows.append(
        ("client CPU", f"{report.client_cpu_s:.1f} s ({report.client_cpu_pct:.0f}% of a core)")
    )
    for name, value in rows:
        table.add_row(name, str(value))
    return table
