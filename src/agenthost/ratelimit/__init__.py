"""Per-tenant turn limits (rate by GCRA, and turns in flight), in-process or atomic in Redis;
`create_limiter(url)` picks the backend by URL scheme."""

from __future__ import annotations

from agenthost.connections.redis import is_redis_url
from agenthost.connections.redis_py import load_redis_py
from agenthost.ratelimit.base import Admission, TurnLimiter

__all__ = ["Admission", "TurnLimiter", "create_limiter"]


def create_limiter(url: str, *, hold_s: float) -> TurnLimiter:
    """Build (not open) the limiter at `url`: a Redis URL (shared by the fleet), else this
    process's own (`memory://`)."""
    if is_redis_url(url):
        load_redis_py()  # before the module that imports redis-py
        from agenthost.ratelimit.redis import RedisLimiter

        return RedisLimiter(url, hold_s=hold_s)
    from agenthost.ratelimit.memory import MemoryLimiter

    return MemoryLimiter(hold_s=hold_s)
