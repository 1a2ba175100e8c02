"""`redis://`: each turn's events in a Redis Stream `ah:{sid}:stream:<turn_id>` (entry id
`0-<seq>`, capped length, TTL), so a client that lost its connection resumes on any process.

Readers on the process that runs the turn are served from memory; others `XREAD BLOCK` from
Redis. The stream key shares the session's hash tag, so it lives on the session's slot.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.cluster import RedisCluster

from agenthost.brokers.base import StreamEvent
from agenthost.brokers.memory import MemoryBroker
from agenthost.errors import StoreUnavailable

__all__ = ["RedisBroker"]

_FAILURES = (rexc.ConnectionError, rexc.TimeoutError, rexc.ClusterDownError, OSError)
MAX_EVENTS = 100_000  # a stream longer than this keeps its newest events
RUNNING_TTL_S = 3600  # a turn whose process died leaves no stream behind for longer


def _key(session_id: str, turn_id: str) -> str:
    return f"ah:{{{session_id}}}:stream:{turn_id}"


def _event(entry_id: bytes | str, fields: dict[bytes, bytes]) -> StreamEvent:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    kind: Any = fields[b"k"].decode()
    return StreamEvent(int(raw.split("-", 1)[1]), kind, fields[b"d"])


class RedisBroker(MemoryBroker):
    def __init__(self, url: str, *, stream_ttl: float = 300.0) -> None:
        super().__init__(stream_ttl=stream_ttl)
        self.url = url
        self.cluster = url.split("://", 1)[0].endswith("+cluster")
        self._client: Any = None

    async def open(self) -> None:
        plain = self.url.replace("+cluster", "", 1)
        options: dict[str, Any] = {"socket_connect_timeout": 1.0, "max_connections": 10_000}
        if self.cluster:
            self._client = RedisCluster.from_url(plain, **options)
        else:
            self._client = aioredis.Redis(
                connection_pool=aioredis.BlockingConnectionPool.from_url(
                    plain, timeout=2.0, **options
                )
            )

    async def close(self) -> None:
        await super().close()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None

    async def exists(self, session_id: str, turn_id: str) -> bool:
        if self.local(session_id, turn_id):
            return True
        try:
            return bool(await self._client.exists(_key(session_id, turn_id)))
        except _FAILURES as exc:
            raise StoreUnavailable(f"redis broker: {exc}") from None

    async def last(self, session_id: str, turn_id: str) -> StreamEvent | None:
        local = self.last_local(session_id, turn_id)
        if local is not None:
            return local
        try:
            reply = await self._client.xrevrange(_key(session_id, turn_id), count=1)
        except _FAILURES as exc:
            raise StoreUnavailable(f"redis broker: {exc}") from None
        return _event(*reply[0]) if reply else None

    def publish_nowait(self, session_id: str, turn_id: str, event: StreamEvent) -> bool:
        return False  # Redis must have it too: `publish` waits for the XADD

    async def publish(self, session_id: str, turn_id: str, event: StreamEvent) -> None:
        self.publish_local(session_id, turn_id, event)
        key = _key(session_id, turn_id)
        ttl = int(self.stream_ttl) if event.final else RUNNING_TTL_S
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.xadd(key, {"k": event.kind, "d": event.data}, id=f"0-{event.seq}",
                          maxlen=MAX_EVENTS, approximate=True)  # fmt: skip
                if event.seq == 1 or event.kind != "chunk":
                    pipe.expire(key, ttl)
                await pipe.execute()
        except _FAILURES as exc:
            # Local readers still get the event; only a resume elsewhere would miss it.
            raise StoreUnavailable(f"redis broker: {exc}") from None

    def read(
        self, session_id: str, turn_id: str, after: int, wait: float
    ) -> AsyncIterator[StreamEvent]:
        if self.local(session_id, turn_id):
            return super().read(session_id, turn_id, after, wait)  # pushed from memory
        return self._read_redis(session_id, turn_id, after, wait)

    async def _read_redis(
        self, session_id: str, turn_id: str, after: int, wait: float
    ) -> AsyncIterator[StreamEvent]:
        key = _key(session_id, turn_id)
        last = f"0-{after}"
        while True:
            try:
                reply = await self._client.xread({key: last}, count=500, block=int(wait * 1000))
            except _FAILURES as exc:
                raise StoreUnavailable(f"redis broker: {exc}") from None
            if not reply:
                return
            for _, entries in reply:
                for entry_id, fields in entries:
                    event = _event(entry_id, fields)
                    last = f"0-{event.seq}"
                    yield event
                    if event.final:
                        return
