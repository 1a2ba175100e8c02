"""The work queue between `api` and `worker` processes (`--role`), on the shared store's own
engine.

| store URL | queue |
|---|---|
| `redis://...`, `redis+cluster://...` | Redis Streams, a consumer group, a stream per tenant |
| `postgresql://...` | a table taken with `SELECT ... FOR UPDATE SKIP LOCKED` |

`sqlite://` and `memory://` belong to one process: they have no queue (only `--role all`).
"""

from __future__ import annotations

from agenthost.connections.redis import is_redis_url
from agenthost.connections.redis_py import load_redis_py
from agenthost.queue.base import Delivery, QueuedTurn, QueueStats, WorkQueue

__all__ = ["Delivery", "QueueStats", "QueuedTurn", "WorkQueue", "create_queue"]


def create_queue(url: str, *, claim_after: float, max_queued: int = 0) -> WorkQueue:
    """Build (not open) the queue on the store `url`; ValueError for a store that cannot
    carry one (SQLite, memory)."""
    if is_redis_url(url):
        load_redis_py()  # before the module that imports redis-py
        from agenthost.queue.redis import RedisWorkQueue

        return RedisWorkQueue(url, claim_after=claim_after, max_queued=max_queued)
    if url.lower().startswith(("postgresql://", "postgres://")):
        from agenthost.queue.postgres import PostgresWorkQueue

        return PostgresWorkQueue(url, claim_after=claim_after, max_queued=max_queued)
    raise ValueError(
        "a work queue needs a shared store (redis://, redis+cluster:// or postgresql://); "
        f"{url.split('://', 1)[0]}:// serves one process: use --role all"
    )
