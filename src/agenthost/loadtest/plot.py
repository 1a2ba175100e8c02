"""The load test as a picture (matplotlib, PNG): the latency of turns and how many were
answered, over time, both by when each turn was answered. A slice with no answers is a gap
in the latency lines (not a 0 ms point) and a zero bar."""

from __future__ import annotations

import math
from pathlib import Path

from agenthost.loadtest.report import LoadReport

__all__ = ["write_plot"]


def write_plot(report: LoadReport, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # an optional extra: say how to get it
        raise RuntimeError("--plot needs matplotlib: pip install 'agenthost[plot]'") from exc
    points = report.timeline
    width = points[0].width_s if points else 1.0
    middles = [p.start_s + p.width_s / 2 for p in points]
    fig, (lat, thr) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for name, values in (
        ("p50", [p.p50_ms for p in points]),
        ("p99", [p.p99_ms for p in points]),
    ):
        # NaN breaks the line: no answers in a slice is no latency, not 0 ms.
        ys = [math.nan if v is None else v for v in values]
        lat.plot(middles, ys, marker="o", markersize=3, label=name)
    lat.set_ylabel("latency of turns answered (ms)")
    lat.set_ylim(bottom=0)
    lat.legend(loc="upper left")
    lat.grid(alpha=0.3)
    thr.bar(
        [p.start_s for p in points],
        [p.turns_per_s for p in points],
        width=width * 0.9,
        align="edge",
        color="tab:green",
    )
    thr.set_ylabel(f"turns answered / s\n(per {width:g} s slice)")
    thr.set_xlabel("seconds since the load started (when each turn was answered)")
    thr.set_xlim(0, max(report.wall_s, points[-1].start_s + width if points else 1.0))
    thr.grid(alpha=0.3)
    c = report.config
    v = report.verification
    verdict = (
        f"lost {v.lost}, dup {v.duplicated}, reordered {v.out_of_order}, mismatched {v.mismatched}"
        if v
        else "not verified"
    )
    fig.suptitle(
        f"{c.mode} load on {c.url}: {c.sessions} sessions, "
        f"{report.answered} turns answered, {report.failed} failed\n{verdict}"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
