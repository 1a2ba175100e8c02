"""The garbage collector's settings for a serving process.

What a young collection walks. At 10,000 sessions a worker's young generation holds about
50,000 objects when the old threshold (50,000) fires: the state of keep-alive connections
opened since the last collection (uvicorn's protocol, its parser, the transport, socket,
flow control and their bound methods: about 45 objects each) and of turns in flight
(coroutines, the Task, futures, timer handles and their contexts: about 20 each). No large
container; the walk costs about 1 us an object on a quiet core (about 50 ms a collection),
several times that on a busy machine, and finds almost nothing to free: all of it is alive.
Every turn whose answer is due during the walk waits for it.

The cost of the walks is set by how many objects live to see one, not by how often they run,
so collecting at 10,000 allocations instead walks a fraction as much each time, more
often: measured with `benchmarks/concurrent_sessions.py` (10,000 sessions, `--workers 2`),
the longest pause was a third to a quarter as long, for about a third more collector CPU
in all. A middle-generation collection walks everything that survived a young one (every
connection and turn in flight, hundreds of milliseconds): the middle threshold keeps it at
least as rare as before (once per 2,000,000 net allocations rather than 1,000,000).
"""

from __future__ import annotations

import gc

__all__ = ["SERVER_THRESHOLDS", "tune_collector"]

SERVER_THRESHOLDS = (10_000, 200, 100)


def tune_collector() -> None:
    """Freeze what is loaded (it lives as long as the process: keep it out of every later
    collection) and collect young objects in short walks."""
    gc.freeze()
    gc.set_threshold(*SERVER_THRESHOLDS)
