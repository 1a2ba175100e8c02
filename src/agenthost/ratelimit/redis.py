"""The fleet's turn limiter: one Lua script decides rate (GCRA on Redis's clock) and turns in
flight atomically, in one round trip. A tenant's two keys share a hash tag (one slot).

On a single Redis server the calls go through the pipelining client, `RedisWire` (many turns
share each socket write); on Redis Cluster through redis-py's cluster client. Either takes the
URL's `socket_timeout` and `connect_timeout`, else 2 s and 1 s."""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import redis.exceptions as rexc

from agenthost.auth.principal import TenantLimits
from agenthost.connections.redis import RedisSettings, close_clients
from agenthost.connections.redis_wire import RedisWire
from agenthost.core.errors import StoreUnavailable
from agenthost.ratelimit.base import Admission

__all__ = ["RedisLimiter"]

_FAILURES = (rexc.ConnectionError, rexc.TimeoutError, rexc.ClusterDownError, OSError)

# KEYS: tat, inflight. ARGV: interval_ms, burst, max_inflight, hold_ms, slot (gate.slot).
# Returns {code, retry_ms, remaining, reset_ms}; code 0 admitted, 1 rate, 2 inflight.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_inflight = tonumber(ARGV[3])
local hold = tonumber(ARGV[4])
local new_tat = nil
local remaining = 0
local reset = 0
if interval > 0 then
  local tat = tonumber(redis.call('GET', KEYS[1]) or now)
  if tat < now then tat = now end
  local allow_at = tat - interval * (burst - 1)
  if allow_at > now then
    return {1, allow_at - now, 0, tat - now}
  end
  new_tat = tat + interval
  remaining = math.floor((now + interval * burst - new_tat) / interval)
  reset = new_tat - now
end
if max_inflight > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZSCORE', KEYS[2], ARGV[5]) == false
     and redis.call('ZCARD', KEYS[2]) >= max_inflight then
    return {2, 1000, remaining, reset}
  end
  redis.call('ZADD', KEYS[2], now + hold, ARGV[5])
  redis.call('PEXPIRE', KEYS[2], hold)
end
if new_tat ~= nil then
  redis.call('SET', KEYS[1], new_tat, 'PX', math.max(new_tat - now, 1))
end
return {0, 0, remaining, reset}
"""

_ADMIT_SHA = hashlib.sha1(_ADMIT.encode()).hexdigest()

_REASONS: dict[int, Any] = {1: "rate", 2: "inflight"}


def _keys(tenant: str) -> list[str]:
    tag = "{rl:" + tenant + "}"
    return [f"ah:{tag}:tat", f"ah:{tag}:inflight"]


class RedisLimiter:
    def __init__(self, url: str, *, hold_s: float) -> None:
        self.url = url
        self.settings = RedisSettings.from_url(url)
        self.cluster = self.settings.cluster
        self.hold_ms = int(hold_s * 1000)
        self._client: Any = None
        self._admit: Any = None
        self._wire: RedisWire | None = None

    async def open(self) -> None:
        if not self.cluster:
            self._wire = self.settings.wire(shared=True)
            return
        self._client = self.settings.light_client()
        self._admit = self._client.register_script(_ADMIT)

    async def close(self) -> None:
        await close_clients(self._wire, self._client)
        self._wire = self._client = None

    async def admit(self, tenant: str, limits: TenantLimits, slot: str) -> Admission:
        # Whole milliseconds: Lua keeps numbers as doubles and prints them with 14 digits.
        interval_ms = round(60_000 / limits.turns_per_minute) if limits.turns_per_minute else 0
        args = [interval_ms, limits.burst, limits.max_inflight, self.hold_ms, slot]
        try:
            if self._wire is not None:
                reply = await self._wire.evalsha(_ADMIT_SHA, _ADMIT, _keys(tenant), args)
            else:
                reply = await self._admit(keys=_keys(tenant), args=args)
            code, retry_ms, remaining, reset_ms = reply
        except _FAILURES as exc:
            raise StoreUnavailable(f"redis rate limiter: {exc}") from None
        if code:
            return Admission(False, _REASONS[int(code)], int(retry_ms) / 1000, 0, reset_ms / 1000)
        return Admission(True, "", 0.0, int(remaining), int(reset_ms) / 1000)

    def release_nowait(self, tenant: str, limits: TenantLimits, slot: str) -> bool:
        if limits.max_inflight <= 0:
            return True
        return self._wire is not None and self._wire.call_nowait("ZREM", _keys(tenant)[1], slot)

    async def release(self, tenant: str, limits: TenantLimits, slot: str) -> None:
        if limits.max_inflight <= 0:
            return
        # If this fails the slot frees itself after hold_s.
        with contextlib.suppress(*_FAILURES, StoreUnavailable):
            if self._wire is not None:
                await self._wire.call("ZREM", _keys(tenant)[1], slot)
            else:
                await self._client.zrem(_keys(tenant)[1], slot)
