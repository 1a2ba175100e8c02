"""Where cached LLM answers live: `memory://` (this process: a bounded LRU with a TTL) or
`redis://` (shared by a fleet: SET with PX, msgspec-encoded values).

Both implement `LLMCacheBackend`. A backend never fails an LLM call: when Redis is
unreachable a lookup is a miss, a store is skipped and a lock is granted, so the caller goes
upstream as if there were no cache. Each counts `hits` and `misses` of its lookups.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

import msgspec

from agenthost.connections.redis import RedisSettings, close_clients, is_redis_url
from agenthost.connections.redis_py import load_redis_py

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "CachedAnswer",
    "LLMCacheBackend",
    "MemoryCacheBackend",
    "RedisCacheBackend",
    "create_cache_backend",
]

log = logging.getLogger("agenthost.llm.cache")

DEFAULT_MAX_ENTRIES = 10_000
"""Answers an in-process cache keeps at most (`memory://?max_entries=N` changes it)."""

DEFAULT_LOCK_TTL_S = 5.0
"""Life of a Redis single-flight lock without renewal: how long other processes wait for a
caller that died mid-call before they go upstream themselves."""


class CachedAnswer(msgspec.Struct, array_like=True, frozen=True):
    """An answer as the chunks it arrived in (one chunk for a non-streamed answer)."""

    chunks: list[str]

    @property
    def text(self) -> str:
        return "".join(self.chunks)


class LLMCacheBackend(Protocol):
    """Answers by cache key, with a TTL, and a per-key lock for single-flight across
    processes. `hits`/`misses` count `get` calls that found / did not find an answer."""

    url: str
    ttl_s: float
    lock_ttl_s: float | None
    """Life of a cross-process lock without renewal; None: the backend has no such lock."""
    hits: int
    misses: int

    async def get(self, key: str, *, count: bool = True) -> CachedAnswer | None:
        """The live answer under `key`, or None; `count=False` leaves `hits`/`misses` be."""
        ...

    async def put(self, key: str, answer: CachedAnswer) -> None:
        """Keep `answer` under `key` for `ttl_s` seconds."""
        ...

    async def lock(self, key: str, token: str) -> bool:
        """Take `key`'s single-flight lock for `token`; False while another process holds it."""
        ...

    async def renew(self, key: str, token: str) -> bool:
        """Extend the lock `token` holds; False if it was lost."""
        ...

    async def unlock(self, key: str, token: str) -> None:
        """Release the lock if `token` still holds it."""
        ...

    async def wait(self, key: str, timeout_s: float) -> CachedAnswer | None:
        """Wait for the lock holder's answer: it, once stored; None when the lock is released
        without one (the call failed) or after `timeout_s`."""
        ...

    async def close(self) -> None: ...


class MemoryCacheBackend:
    """This process's answers: least recently used first out past `max_entries`, each gone
    `ttl_s` after it was stored. Single-flight needs no lock here: the caching client already
    shares one call among the callers of its process."""

    def __init__(
        self,
        ttl_s: float,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"LLM cache TTL must be > 0 s, not {ttl_s}")
        if max_entries < 1:
            raise ValueError(f"LLM cache max_entries must be >= 1, not {max_entries}")
        self.url = f"memory://?max_entries={max_entries}"
        self.ttl_s = ttl_s
        self.lock_ttl_s: float | None = None
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, CachedAnswer]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str, *, count: bool = True) -> CachedAnswer | None:
        entry = self._entries.get(key)
        if entry is not None and entry[0] <= self._clock():
            del self._entries[key]
            entry = None
        if entry is None:
            self.misses += count
            return None
        self._entries.move_to_end(key)
        self.hits += count
        return entry[1]

    async def put(self, key: str, answer: CachedAnswer) -> None:
        self._entries[key] = (self._clock() + self.ttl_s, answer)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def lock(self, key: str, token: str) -> bool:
        return True

    async def renew(self, key: str, token: str) -> bool:
        return True

    async def unlock(self, key: str, token: str) -> None:
        return None

    async def wait(self, key: str, timeout_s: float) -> CachedAnswer | None:
        return None

    async def close(self) -> None:
        self._entries.clear()


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(CachedAnswer).decode

# Compare-and-delete / compare-and-extend: only the holder's token releases or renews a lock.
_UNLOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""


def _answer_key(key: str) -> str:
    # The hash tag puts an answer and its lock on one Cluster slot.
    return f"ah:llm-cache:{{{key}}}"


def _lock_key(key: str) -> str:
    return f"ah:llm-cache:{{{key}}}:lock"


class RedisCacheBackend:
    """Answers in Redis (a single server or a Cluster) under `ah:llm-cache:{<key>}`, with a
    `...:lock` key (SET NX PX) held by the process calling upstream. Waiters poll the lock and
    the answer (every 5 ms at first, backing off to 50 ms) until one is there or the lock is
    gone."""

    def __init__(
        self,
        url: str,
        ttl_s: float,
        *,
        lock_ttl_s: float = DEFAULT_LOCK_TTL_S,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"LLM cache TTL must be > 0 s, not {ttl_s}")
        # redis-py is imported by the backend that uses it (a server without a Redis LLM
        # cache starts without it: it is the largest import of agenthost's start-up).
        load_redis_py()
        import redis.exceptions as rexc

        self._failures: tuple[type[BaseException], ...] = (rexc.RedisError, OSError)
        settings = RedisSettings.from_url(url)
        self.url = url
        self.ttl_s = ttl_s
        self.lock_ttl_s: float | None = lock_ttl_s
        self.cluster = settings.cluster
        self.hits = 0
        self.misses = 0
        self.waiting = 0
        """Calls waiting right now for another process's answer."""
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._lock_ms = max(1, round(lock_ttl_s * 1000))
        self._failing = False
        self._client: Any = settings.light_client()
        self._unlock = self._client.register_script(_UNLOCK)
        self._renew = self._client.register_script(_RENEW)

    def _failed(self, exc: BaseException) -> None:
        # One warning per outage, not one per call.
        if not self._failing:
            log.warning("LLM cache on %s unavailable, calling the LLM directly: %s", self.url, exc)
        self._failing = True

    def _ok(self) -> None:
        if self._failing:
            log.warning("LLM cache on %s is back", self.url)
        self._failing = False

    async def get(self, key: str, *, count: bool = True) -> CachedAnswer | None:
        try:
            raw = await self._client.get(_answer_key(key))
        except self._failures as exc:
            self._failed(exc)
            raw = None
        else:
            self._ok()
        answer = _decoded(raw)
        if answer is None:
            self.misses += count
        else:
            self.hits += count
        return answer

    async def put(self, key: str, answer: CachedAnswer) -> None:
        try:
            await self._client.set(_answer_key(key), _encode(answer), px=self._ttl_ms)
        except self._failures as exc:
            self._failed(exc)

    async def lock(self, key: str, token: str) -> bool:
        try:
            taken = await self._client.set(_lock_key(key), token, nx=True, px=self._lock_ms)
        except self._failures as exc:
            self._failed(exc)
            return True
        return bool(taken)

    async def renew(self, key: str, token: str) -> bool:
        try:
            renewed = await self._renew(keys=[_lock_key(key)], args=[token, self._lock_ms])
        except self._failures as exc:
            self._failed(exc)
            return False
        return bool(renewed)

    async def unlock(self, key: str, token: str) -> None:
        try:
            await self._unlock(keys=[_lock_key(key)], args=[token])
        except self._failures as exc:
            self._failed(exc)

    async def wait(self, key: str, timeout_s: float) -> CachedAnswer | None:
        self.waiting += 1
        try:
            return await self._wait(key, timeout_s)
        finally:
            self.waiting -= 1

    async def _wait(self, key: str, timeout_s: float) -> CachedAnswer | None:
        deadline = time.monotonic() + timeout_s
        delay = 0.005
        while True:
            try:
                # The lock first: a holder stores its answer before releasing, so "no lock"
                # followed by "no answer" means the call failed, never that it was too quick.
                locked = await self._client.exists(_lock_key(key))
                raw = await self._client.get(_answer_key(key))
            except self._failures as exc:
                self._failed(exc)
                return None
            answer = _decoded(raw)
            if answer is not None or not locked:
                return answer
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.05)

    async def close(self) -> None:
        await close_clients(None, self._client)


def _decoded(raw: bytes | None) -> CachedAnswer | None:
    if raw is None:
        return None
    try:
        return _decode(raw)
    except msgspec.DecodeError:
        # Written by an incompatible version: treat it as absent (it is overwritten).
        return None


def create_cache_backend(url: str, *, ttl_s: float) -> LLMCacheBackend:
    """The backend for `memory://[?max_entries=N]` or `redis://...` (also `rediss://`,
    `redis+cluster://`); ValueError for anything else."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        options = dict(parse_qsl(parts.query))
        unknown = set(options) - {"max_entries"}
        if unknown or parts.netloc or parts.path not in ("", "/"):
            raise ValueError(f"memory:// LLM cache takes only ?max_entries=N, not {url!r}")
        try:
            max_entries = int(options.get("max_entries", DEFAULT_MAX_ENTRIES))
        except ValueError:
            raise ValueError(f"max_entries must be an integer in {url!r}") from None
        return MemoryCacheBackend(ttl_s, max_entries=max_entries)
    if is_redis_url(url):
        return RedisCacheBackend(url, ttl_s)
    raise ValueError(
        f"unknown LLM cache URL {url!r}: expected memory:// (this process) or "
        "redis://host:port/db (shared by every process on that Redis)"
    )
