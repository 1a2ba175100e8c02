"""Merging the metrics of a `--workers` group: each series labelled with its process, each
family's series together under one header."""

from __future__ import annotations

from agenthost.observability.metrics import Metrics
from agenthost.observability.process_exports import merge_process_exports


def test_series_get_a_process_label_and_families_stay_together() -> None:
    first, second = Metrics(), Metrics()
    first.turn_finished("completed", 0.02)
    second.turn_finished("failed", 0.3)
    merged = merge_process_exports([("0", first.render()), ("1", second.render())]).decode()
    lines = merged.splitlines()
    start = lines.index("# TYPE agenthost_turns_total counter")
    assert lines[start + 1 : start + 3] == [
        'agenthost_turns_total{process="0",outcome="completed"} 1',
        'agenthost_turns_total{process="1",outcome="failed"} 1',
    ]
    assert lines.count("# TYPE agenthost_turns_total counter") == 1
    assert 'agenthost_draining{process="1"} 0' in lines
    assert 'agenthost_turn_duration_seconds_bucket{process="1",le="0.5"} 1' in lines
    assert 'agenthost_turn_duration_seconds_count{process="0"} 1' in lines
    # Every sample line follows its own family's header.
    family = ""
    for line in lines:
        if line.startswith("# TYPE "):
            family = line.split()[2]
        elif not line.startswith("#"):
            assert line.startswith(family), line
