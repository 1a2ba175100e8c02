"""The serving process's garbage-collector settings (agenthost.runtime.collector)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from agenthost.runtime.collector import SERVER_THRESHOLDS, tune_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def _young_collections() -> int:
    return int(gc.get_stats()[0]["collections"])


@pytest.mark.usefixtures("restored_collector")
def test_young_objects_are_walked_in_short_collections_and_what_was_loaded_is_frozen() -> None:
    tune_collector()
    assert gc.get_freeze_count() > 0  # what was loaded is out of every later walk
    assert gc.get_count()[0] < 1_000
    before = _young_collections()
    # 12,000 live containers, as the state of connections and turns in flight: a walk of
    # them starts before they reach 50,000 (about 50 ms a walk at the old threshold).
    alive = [[i] for i in range(12_000)]
    assert _young_collections() > before
    assert len(alive) == 12_000
    # The middle generation (a walk of everything that survived a young one) stays rare.
    assert SERVER_THRESHOLDS[0] * SERVER_THRESHOLDS[1] >= 2_000_000
