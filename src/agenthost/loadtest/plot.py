"""The load test as a picture: latency and throughput over time (matplotlib, PNG)."""

from __future__ import annotations

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
    seconds = [p.second for p in report.timeline]
    fig, (lat, thr) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    lat.plot(seconds, [p.p50_ms for p in report.timeline], label="p50")
    lat.plot(seconds, [p.p99_ms for p in report.timeline], label="p99")
    lat.set_ylabel("turn latency (ms)")
    lat.legend(loc="upper left")
    lat.grid(alpha=0.3)
    thr.bar(seconds, [p.turns for p in report.timeline], width=0.9, color="tab:green")
    thr.set_ylabel("answered turns / s")
    thr.set_xlabel("time since start (s)")
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
