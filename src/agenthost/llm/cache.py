"""`CachingLLM`: an `LLMClient` around any other that answers identical deterministic requests
from a cache and makes one upstream call for identical requests in flight at once.

What is cached: requests with `temperature=0` (an explicit 0: a model's default temperature
is not 0) and `n` unset or 1. The key is a SHA-256 of the upstream's identity, the model, the
messages and every other option (`timeout` and `extra_headers` excepted: they do not change
the answer); a request whose options cannot be encoded is passed through uncached.

Single-flight: in one process, identical calls share one upstream call, streamed or not;
a streaming caller that joins late gets the chunks so far, then the rest as they come. Across
processes (Redis), the first takes a short lock and the others wait for its stored answer,
for at most `wait_timeout_s`, then call upstream themselves. A failed call is never cached:
its callers get its error and the next identical request goes upstream again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import msgspec

from agenthost.connections.redis import RedisSettings, is_redis_url
from agenthost.llm.base import ChatMessage, LLMClient
from agenthost.llm.cache_backends import CachedAnswer, LLMCacheBackend, create_cache_backend
from agenthost.llm.errors import LLMUpstreamError

__all__ = ["CachingLLM", "cache_key", "cached_llm", "is_deterministic"]

KEY_VERSION = 1
"""Part of every key: bumping it orphans answers stored by an incompatible version."""

_NOT_IN_KEY = frozenset({"timeout", "extra_headers"})
_key_encoder = msgspec.json.Encoder(order="sorted")


def is_deterministic(options: Mapping[str, Any]) -> bool:
    """Whether a request with `options` has one answer: temperature 0, one choice."""
    temperature = options.get("temperature")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        return False
    n = options.get("n")
    return temperature == 0 and (n is None or (n == 1 and not isinstance(n, bool)))


def cache_key(
    upstream: str, model: str, messages: Sequence[ChatMessage], options: Mapping[str, Any]
) -> str | None:
    """The cache key of a request, or None when its options cannot be encoded."""
    params = {k: v for k, v in options.items() if k not in _NOT_IN_KEY}
    try:
        payload = _key_encoder.encode(
            (KEY_VERSION, upstream, model, [dict(m) for m in messages], params)
        )
    except (TypeError, ValueError, msgspec.EncodeError):
        return None
    return hashlib.sha256(payload).hexdigest()


class _Flight:
    """One upstream call (or one cache read) shared by every caller asking the same thing."""

    __slots__ = ("_changed", "callers", "chunks", "done", "error", "key", "task", "upstream")

    def __init__(self, key: str) -> None:
        self.key = key
        self.chunks: list[str] = []
        self.done = False
        self.error: BaseException | None = None
        self.upstream = False
        self.callers = 0
        self.task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def add(self, chunk: str) -> None:
        self.chunks.append(chunk)
        self._notify()

    def finish(self, error: BaseException | None = None) -> None:
        if self.done:
            return
        self.error = error
        self.done = True
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def changed(self) -> None:
        await self._changed.wait()


class CachingLLM:
    """An `LLMClient` that serves deterministic requests to `inner` from `backend`.

    `upstream` names what is behind `inner` (its URL), so clients of different servers that
    share a Redis never share answers. Counters: `hits` (calls answered without an upstream
    call of their own: from the cache or by sharing another caller's call), `misses` (upstream
    calls made for cacheable requests) and `uncacheable` (calls passed straight through).
    """

    def __init__(
        self,
        inner: LLMClient,
        backend: LLMCacheBackend,
        *,
        upstream: str = "",
        wait_timeout_s: float = 30.0,
    ) -> None:
        self.inner = inner
        self.backend = backend
        self.model = inner.model
        self.upstream = upstream
        self.wait_timeout_s = wait_timeout_s
        self.hits = 0
        self.misses = 0
        self.uncacheable = 0
        self._flights: dict[str, _Flight] = {}

    def key_for(self, messages: Sequence[ChatMessage], options: Mapping[str, Any]) -> str | None:
        """The cache key of a request, or None when it is not cached."""
        if not is_deterministic(options):
            return None
        return cache_key(self.upstream, self.model, messages, options)

    async def complete(self, messages: Sequence[ChatMessage], **options: Any) -> str:
        key = self.key_for(messages, options)
        if key is None:
            self.uncacheable += 1
            return await self.inner.complete(messages, **options)
        flight, first = self._join(key, messages, options, streaming=False)
        try:
            while not flight.done:
                await flight.changed()
            if flight.error is not None:
                raise flight.error
            self._count(flight, first)
            return "".join(flight.chunks)
        finally:
            self._leave(flight)

    async def stream(self, messages: Sequence[ChatMessage], **options: Any) -> AsyncIterator[str]:
        key = self.key_for(messages, options)
        if key is None:
            self.uncacheable += 1
            async for chunk in self.inner.stream(messages, **options):
                yield chunk
            return
        flight, first = self._join(key, messages, options, streaming=True)
        try:
            sent = 0
            while True:
                while sent < len(flight.chunks):
                    yield flight.chunks[sent]
                    sent += 1
                if flight.done:
                    break
                await flight.changed()
            if flight.error is not None:
                raise flight.error
            self._count(flight, first)
        finally:
            self._leave(flight)

    def _join(
        self,
        key: str,
        messages: Sequence[ChatMessage],
        options: Mapping[str, Any],
        *,
        streaming: bool,
    ) -> tuple[_Flight, bool]:
        """The flight for `key` and whether this caller started it."""
        flight = self._flights.get(key)
        first = flight is None
        if flight is None:
            flight = _Flight(key)
            self._flights[key] = flight
            flight.task = asyncio.create_task(
                self._fly(flight, list(messages), dict(options), streaming),
                name=f"llm-cache-{key[:12]}",
            )
        flight.callers += 1
        return flight, first

    def _count(self, flight: _Flight, first: bool) -> None:
        # The caller that started an upstream call was counted as a miss when it was made.
        if not (first and flight.upstream):
            self.hits += 1

    def _leave(self, flight: _Flight) -> None:
        flight.callers -= 1
        if flight.callers == 0 and not flight.done and flight.task is not None:
            # Nobody wants the answer any more (every caller gave up): stop paying for it.
            flight.task.cancel()
            self._flights.pop(flight.key, None)

    async def _fly(
        self,
        flight: _Flight,
        messages: list[ChatMessage],
        options: dict[str, Any],
        streaming: bool,
    ) -> None:
        error: BaseException | None = None
        try:
            await self._fill(flight, messages, options, streaming)
        except asyncio.CancelledError:
            error = LLMUpstreamError("the LLM call was cancelled")
            raise
        except Exception as exc:
            error = exc
        finally:
            if self._flights.get(flight.key) is flight:
                del self._flights[flight.key]
            flight.finish(error)

    async def _fill(
        self,
        flight: _Flight,
        messages: list[ChatMessage],
        options: dict[str, Any],
        streaming: bool,
    ) -> None:
        key = flight.key
        cached = await self.backend.get(key)
        token = ""
        # Only a shared backend has a lock: in one process the flight itself is the lock.
        if cached is None and self.backend.lock_ttl_s is not None:
            token = secrets.token_hex(8)
            if await self.backend.lock(key, token):
                # The previous holder may have stored its answer between our look and lock.
                cached = await self.backend.get(key, count=False)
            else:
                # Another process is asking the same: wait for its answer, not pay twice.
                cached = await self.backend.wait(key, self.wait_timeout_s)
                token = ""
        if cached is not None:
            if token:
                await self.backend.unlock(key, token)
            for chunk in cached.chunks:
                flight.add(chunk)
            return
        flight.upstream = True
        self.misses += 1
        renewal = asyncio.create_task(self._keep_lock(key, token)) if token else None
        try:
            if streaming:
                async for chunk in self.inner.stream(messages, **options):
                    flight.add(chunk)
            else:
                flight.add(await self.inner.complete(messages, **options))
            await self.backend.put(key, CachedAnswer(list(flight.chunks)))
        finally:
            if renewal is not None:
                renewal.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewal
            if token:
                await self.backend.unlock(key, token)

    async def _keep_lock(self, key: str, token: str) -> None:
        interval = max((self.backend.lock_ttl_s or 3.0) / 3, 0.01)
        while True:
            await asyncio.sleep(interval)
            if not await self.backend.renew(key, token):
                return

    async def close(self) -> None:
        for flight in list(self._flights.values()):
            if flight.task is not None:
                flight.task.cancel()
            # A task cancelled before it ran never finishes its flight: its callers would hang.
            flight.finish(LLMUpstreamError("the LLM client was closed"))
        self._flights.clear()
        await self.backend.close()
        await self.inner.close()

    def __repr__(self) -> str:
        return f"CachingLLM({self.inner!r}, cache={self.backend.url!r})"


def cached_llm(
    inner: LLMClient, url: str, *, ttl_s: float, upstream: str = "", store_url: str = ""
) -> CachingLLM:
    """`inner` behind the cache at `url` (`memory://`, `redis://...`, or `redis` for the
    session store's Redis at `store_url`), answers kept `ttl_s` seconds."""
    if url.strip().lower() == "redis":
        if not is_redis_url(store_url):
            raise ValueError(
                "--llm-cache=redis means the store's Redis, but the store is not Redis"
            )
        # The store's pool size and timeouts are the store's: the cache keeps its own.
        url = RedisSettings.from_url(store_url).without_own_options()
    return CachingLLM(inner, create_cache_backend(url, ttl_s=ttl_s), upstream=upstream)
