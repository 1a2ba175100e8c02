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
    """The turns answered in one slice of the run, `start_s` to `start_s + width_s` seconds
    after it began: how many, at what rate, and their latencies (None: no answers then)."""

    start_s: float
    width_s: float
    turns: int
    turns_per_s: float
    p50_ms: float | None
    p99_ms: float | None


_WIDTHS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


def timeline(done: Sequence[tuple[float, float]], span_s: float = 0.0) -> list[TimelinePoint]:
    """(answered at s, latency ms) of each answered turn -> one point per slice of the run,
    by when turns were answered. Slices are the narrowest of 0.1 s, 0.2 s, 0.5 s, 1 s, ...
    that cut the run into at most 30, so a 10 s run shows its shape as a 10 min run does."""
    end = max([span_s, *(offset for offset, _ in done)])
    width = next((w for w in _WIDTHS if end / w <= 30), _WIDTHS[-1])
    buckets: dict[int, list[float]] = {}
    for offset, latency in done:
        buckets.setdefault(int(offset / width), []).append(latency)
    points = []
    for n in range(math.ceil(end / width) if end > 0 else 0):
        values = buckets.get(n, [])
        p = percentiles(values)
        points.append(
            TimelinePoint(
                round(n * width, 3),
                width,
                len(values),
                round(len(values) / width, 2),
                p.p50 if p else None,
                p.p99 if p else None,
            )
        )
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
    stopped_early: bool = False  # ended by SIGINT or SIGTERM before its turns or duration
    client_loop_lag_ms: Percentiles | None = None
    """How late the client's event loop ran a 50 ms probe timer: added to every latency."""
    client_gc_pauses: int = 0
    client_gc_pause_max_ms: float = 0.0
    client_gc_pause_ms_by_generation: dict[str, float] = {}
    """Time the client's collections took in all, by generation."""

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
    config = report.config
    how = config.mode if config.background == "off" else f"background, {config.background}"
    table = Table(title=f"agenthost loadtest: {config.url} ({how})")
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
    if report.client_loop_lag_ms is not None:
        lag = report.client_loop_lag_ms
        rows.append(("client loop lag p50 / p99 / max ms", f"{lag.p50} / {lag.p99} / {lag.max}"))
    rows.append(
        (
            "client GC pauses",
            f"{report.client_gc_pauses} (longest {report.client_gc_pause_max_ms} ms)",
        )
    )
    for name, value in rows:
        table.add_row(name, str(value))
    return table
