"""Stream brokers: the numbered chunks of in-flight turns, readable from any process.

| URL | backend |
|---|---|
| `memory://` | this process only (embedded default) |
| `redis://...`, `redis+cluster://...` | Redis Streams: a client resumes on any process |
"""

from __future__ import annotations

from agenthost.brokers.base import StreamBroker, StreamEvent
from agenthost.connections.redis import is_redis_url
from agenthost.connections.redis_py import load_redis_py

__all__ = ["StreamBroker", "StreamEvent", "create_broker"]


def create_broker(url: str, *, stream_ttl: float = 300.0) -> StreamBroker:
    """Build (not open) the broker named by `url`; ValueError for an unknown scheme."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        from agenthost.brokers.memory import MemoryBroker

        return MemoryBroker(stream_ttl=stream_ttl)
    if is_redis_url(url):
        load_redis_py()  # before the module that imports redis-py
        from agenthost.brokers.redis import RedisBroker

        return RedisBroker(url, stream_ttl=stream_ttl)
    raise ValueError(f"unknown broker URL {url!r}: expected memory:// or redis://host:port/db")
