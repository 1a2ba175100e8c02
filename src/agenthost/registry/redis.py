"""`redis://` (and a Redis Cluster): the registry in the fleet's Redis. All its keys share
the hash tag `{ah:fleet}`, so it lives on one slot of a Cluster too: a hash of records
(process id -> record with its expiry), and a capped list of autoscaler decisions."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from redis import exceptions as rexc

from agenthost.connections.redis import RedisSettings, close_clients
from agenthost.core.errors import StoreUnavailable
from agenthost.registry.base import (
    DECISIONS_KEPT,
    AutoscaleDecision,
    ProcessRecord,
    decode_decision,
    encode,
    order,
)

__all__ = ["RedisRegistry"]

PROCESSES = "ah:{ah:fleet}:processes"
DECISIONS = "ah:{ah:fleet}:autoscale"

_FAILURES = (rexc.ConnectionError, rexc.TimeoutError, rexc.ClusterDownError, OSError)


class _Entry(msgspec.Struct, array_like=True):
    expires_at: float
    record: ProcessRecord


_decode_entry = msgspec.json.Decoder(_Entry).decode


class RedisRegistry:
    def __init__(self, url: str) -> None:
        self.settings = RedisSettings.from_url(url)
        self._client: Any = None

    async def open(self) -> None:
        self._client = self.settings.light_client()

    async def close(self) -> None:
        await close_clients(None, self._client)
        self._client = None

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except _FAILURES as exc:
            raise StoreUnavailable(f"redis registry: {exc}") from None

    async def beat(self, record: ProcessRecord, ttl_s: float) -> None:
        entry = encode(_Entry(time.time() + ttl_s, record))
        await self._call(self._client.hset(PROCESSES, record.process_id, entry))

    async def remove(self, process_id: str) -> None:
        await self._call(self._client.hdel(PROCESSES, process_id))

    async def processes(self) -> list[ProcessRecord]:
        raw = await self._call(self._client.hgetall(PROCESSES))
        now = time.time()
        live: list[ProcessRecord] = []
        expired: list[bytes] = []
        for field, value in raw.items():
            entry = _decode_entry(value)
            if entry.expires_at > now:
                live.append(entry.record)
            else:
                expired.append(field)
        if expired:
            await self._call(self._client.hdel(PROCESSES, *expired))
        return order(live)

    async def add_decision(self, decision: AutoscaleDecision) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.lpush(DECISIONS, encode(decision))
            pipe.ltrim(DECISIONS, 0, DECISIONS_KEPT - 1)
            await self._call(pipe.execute())

    async def decisions(self, limit: int = 20) -> list[AutoscaleDecision]:
        raws = await self._call(self._client.lrange(DECISIONS, 0, limit - 1))
        return [decode_decision(raw) for raw in raws]
