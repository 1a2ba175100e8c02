"""The benchmark scripts keep working: a tiny run prints the JSON the docs are built from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_turn_cpu_runs_and_reports_each_target_against_the_baseline(tmp_path: Path) -> None:
    out = tmp_path / "turn_cpu.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/turn_cpu.py", "--targets", "baseline,sqlite,redis",
         "--turns", "60", "--sessions", "20", "--warmup", "20", "--histories", "5",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["benchmark"] == "turn_cpu"
    rows = {(r["target"], r["history"]): r for r in result["results"]}
    assert set(rows) == {("baseline", 5), ("sqlite", 5), ("redis", 5)}
    for row in rows.values():
        assert row["errors"] == 0 and row["turns"] == 60
        assert row["cpu_ms_per_turn"] > 0
    assert rows[("redis", 5)]["redis_cpu_ms_per_turn"] >= 0
    assert "baseline_over_this_h5" in result["summary"]["sqlite"]
    rendered = subprocess.run(
        [sys.executable, "-c",
         "import sys, json; sys.path.insert(0, 'benchmarks'); import render_docs; "
         f"print(render_docs.turn_cpu(json.load(open({str(out)!r}))))"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    assert "| redis | 5 |" in rendered.stdout and result["command"] in rendered.stdout
