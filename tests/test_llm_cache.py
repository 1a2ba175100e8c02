"""The LLM response cache: one conformance suite over the in-process and Redis backends
(hits without an upstream call, streamed replays, TTL, errors never cached, single-flight),
single-flight across two clients on one real Redis, and a real `agenthost serve
--llm-cache memory://` process making one request to `llm-sim` for two identical turns."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from agenthost.core.settings import Settings
from agenthost.llm import LLMUpstreamError
from agenthost.llm.base import ChatMessage
from agenthost.llm.cache import CachingLLM, cache_key, cached_llm, is_deterministic
from agenthost.llm.cache_backends import (
    CachedAnswer,
    LLMCacheBackend,
    MemoryCacheBackend,
    RedisCacheBackend,
    create_cache_backend,
)
from agenthost.llm.sim_client import SimLLM
from agenthost.llm.sim_model import answer_for
from agenthost.turns.agents import Turn
from tests.fixtures.agenthost import AgentHostProcess, free_port
from tests.fixtures.llm import LLMSimServer

REPO_ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ["memory", "redis"]


async def deterministic_agent(turn: Turn) -> str:
    """The agent of the integration test: asks its LLM at temperature 0, so it is cached."""
    return await turn.llm.complete(turn.messages(), temperature=0)


class CountingLLM:
    """An `LLMClient` around the in-process simulator that counts the calls reaching it and,
    while `gate` is clear, holds them before they answer."""

    def __init__(self, url: str = "sim://") -> None:
        self.sim = SimLLM.from_url(url)
        self.model = self.sim.model
        self.calls = 0
        self.cancelled = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def complete(self, messages: Sequence[ChatMessage], **options: Any) -> str:
        self.calls += 1
        try:
            await self.gate.wait()
            return await self.sim.complete(messages, **options)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def stream(self, messages: Sequence[ChatMessage], **options: Any) -> AsyncIterator[str]:
        self.calls += 1
        await self.gate.wait()
        async for chunk in self.sim.stream(messages, **options):
            yield chunk

    async def close(self) -> None:
        await self.sim.close()


def _messages(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


async def eventually(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll an async `predicate` until true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


BackendFactory = Callable[..., LLMCacheBackend]


@pytest.fixture(params=BACKENDS)
async def make_backend(request: pytest.FixtureRequest) -> AsyncIterator[BackendFactory]:
    """Backends of the parametrized kind: `make_backend(ttl_s=...)`; closed after the test."""
    made: list[LLMCacheBackend] = []
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")

    def make(ttl_s: float = 60.0) -> LLMCacheBackend:
        backend = create_cache_backend(url, ttl_s=ttl_s)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.close()


# -- conformance: every backend ---------------------------------------------------------------


async def test_a_hit_returns_the_same_text_without_a_second_upstream_call(
    make_backend: BackendFactory,
) -> None:
    upstream = CountingLLM()
    llm = CachingLLM(upstream, make_backend())
    messages = _messages("cache me")
    first = await llm.complete(messages, temperature=0)
    second = await llm.complete(messages, temperature=0)
    assert first == second == answer_for(messages)
    assert upstream.calls == 1
    assert (llm.hits, llm.misses) == (1, 1)
    assert (llm.backend.hits, llm.backend.misses) == (1, 1)
    await llm.close()


async def test_streams_replay_the_cached_chunks(make_backend: BackendFactory) -> None:
    upstream = CountingLLM("sim://?tokens_per_s=2000")
    llm = CachingLLM(upstream, make_backend())
    messages = _messages("stream me")
    live = [chunk async for chunk in llm.stream(messages, temperature=0)]
    replayed = [chunk async for chunk in llm.stream(messages, temperature=0)]
    assert replayed == live and len(live) > 3
    assert "".join(live) == answer_for(messages)
    # One key for both shapes: a complete() is served from the streamed answer.
    assert await llm.complete(messages, temperature=0) == answer_for(messages)
    assert upstream.calls == 1
    await llm.close()


async def test_a_streamed_call_after_a_complete_gets_the_answer_as_one_chunk(
    make_backend: BackendFactory,
) -> None:
    upstream = CountingLLM()
    llm = CachingLLM(upstream, make_backend())
    messages = _messages("whole, then streamed")
    text = await llm.complete(messages, temperature=0)
    assert [chunk async for chunk in llm.stream(messages, temperature=0)] == [text]
    assert upstream.calls == 1
    await llm.close()


@pytest.mark.parametrize(
    "options",
    [{}, {"temperature": 0.7}, {"temperature": 0, "n": 2}, {"temperature": None}],
    ids=["unset", "0.7", "n=2", "none"],
)
async def test_non_deterministic_requests_are_never_cached(
    make_backend: BackendFactory, options: dict[str, Any]
) -> None:
    upstream = CountingLLM()
    llm = CachingLLM(upstream, make_backend())
    messages = _messages("be creative")
    for _ in range(3):
        assert await llm.complete(messages, **options) == answer_for(messages)
    assert [c async for c in llm.stream(messages, **options)]
    assert upstream.calls == 4
    assert (llm.hits, llm.misses, llm.uncacheable) == (0, 0, 4)
    await llm.close()


async def test_answers_expire_after_the_ttl(make_backend: BackendFactory) -> None:
    upstream = CountingLLM()
    llm = CachingLLM(upstream, make_backend(ttl_s=0.2))
    messages = _messages("short-lived")
    started = time.monotonic()
    await llm.complete(messages, temperature=0)
    await llm.complete(messages, temperature=0)
    assert upstream.calls == 1

    async def called_again() -> bool:
        await llm.complete(messages, temperature=0)
        return upstream.calls == 2

    await eventually(called_again, 5, "the cached answer to expire")
    assert time.monotonic() - started >= 0.2
    await llm.close()


async def test_errors_are_never_cached(make_backend: BackendFactory) -> None:
    # The simulator fails the first request of each prompt with a 503, then answers.
    upstream = CountingLLM("sim://")
    upstream.sim = SimLLM.from_url("sim://?model=error-503-x1")
    llm = CachingLLM(upstream, make_backend())
    messages = _messages("fail once")
    with pytest.raises(LLMUpstreamError):
        await llm.complete(messages, temperature=0)
    assert await llm.complete(messages, temperature=0) == answer_for(messages)
    assert await llm.complete(messages, temperature=0) == answer_for(messages)
    assert upstream.calls == 2
    await llm.close()


async def test_fifty_identical_calls_at_once_make_one_upstream_call(
    make_backend: BackendFactory,
) -> None:
    upstream = CountingLLM()
    upstream.gate.clear()
    llm = CachingLLM(upstream, make_backend())
    messages = _messages("everyone asks this")
    calls = [asyncio.create_task(llm.complete(messages, temperature=0)) for _ in range(50)]
    await eventually(_true_when(lambda: upstream.calls == 1), 5, "the upstream call")
    upstream.gate.set()
    answers = await asyncio.gather(*calls)
    assert set(answers) == {answer_for(messages)}
    assert upstream.calls == 1
    assert (llm.hits, llm.misses) == (49, 1)
    await llm.close()


async def test_concurrent_streams_share_one_upstream_stream(make_backend: BackendFactory) -> None:
    upstream = CountingLLM("sim://?tokens_per_s=500")
    llm = CachingLLM(upstream, make_backend())
    messages = _messages("stream to all of you")

    async def read() -> list[str]:
        return [chunk async for chunk in llm.stream(messages, temperature=0)]

    first = asyncio.create_task(read())
    await eventually(_true_when(lambda: upstream.calls == 1), 5, "the upstream stream")
    # Joining mid-stream: the chunks so far, then the rest as they come.
    streams = await asyncio.gather(first, *(read() for _ in range(9)))
    assert all(chunks == streams[0] for chunks in streams)
    assert "".join(streams[0]) == answer_for(messages) and len(streams[0]) > 3
    assert upstream.calls == 1
    await llm.close()


async def test_callers_sharing_a_failed_call_all_get_its_error(
    make_backend: BackendFactory,
) -> None:
    upstream = CountingLLM()
    upstream.sim = SimLLM.from_url("sim://?model=error-500")
    upstream.gate.clear()
    llm = CachingLLM(upstream, make_backend())
    messages = _messages("always failing")
    calls = [asyncio.create_task(llm.complete(messages, temperature=0)) for _ in range(5)]
    await eventually(_true_when(lambda: upstream.calls == 1), 5, "the upstream call")
    upstream.gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, LLMUpstreamError) for r in results)
    assert upstream.calls == 1
    with pytest.raises(LLMUpstreamError):
        await llm.complete(messages, temperature=0)
    assert upstream.calls == 2
    await llm.close()


async def test_a_call_nobody_waits_for_is_cancelled(make_backend: BackendFactory) -> None:
    upstream = CountingLLM()
    upstream.gate.clear()
    llm = CachingLLM(upstream, make_backend())
    messages = _messages("never mind")
    call = asyncio.create_task(llm.complete(messages, temperature=0))
    await eventually(_true_when(lambda: upstream.calls == 1), 5, "the upstream call")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await eventually(_true_when(lambda: upstream.cancelled == 1), 5, "the upstream cancel")
    upstream.gate.set()
    assert await llm.complete(messages, temperature=0) == answer_for(messages)
    assert upstream.calls == 2
    await llm.close()


def _true_when(condition: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return condition()

    return check


# -- keys ---------------------------------------------------------------------------------------


def test_the_key_covers_everything_that_changes_the_answer() -> None:
    messages = _messages("key")
    base = cache_key("sim://", "m", messages, {"temperature": 0})
    assert base is not None and len(base) == 64
    assert cache_key("sim://", "m", messages, {"temperature": 0}) == base
    assert cache_key("sim://", "m", messages, {"temperature": 0, "timeout": 5}) == base
    others = [
        cache_key("http://other/v1", "m", messages, {"temperature": 0}),
        cache_key("sim://", "other-model", messages, {"temperature": 0}),
        cache_key("sim://", "m", _messages("other"), {"temperature": 0}),
        cache_key("sim://", "m", messages, {"temperature": 0, "max_tokens": 5}),
        cache_key("sim://", "m", messages, {"temperature": 0.0, "seed": 1}),
    ]
    assert len({base, *others}) == 6
    assert cache_key("sim://", "m", messages, {"temperature": 0, "x": object()}) is None


def test_only_temperature_zero_with_one_choice_is_deterministic() -> None:
    assert is_deterministic({"temperature": 0})
    assert is_deterministic({"temperature": 0.0, "n": 1})
    assert not is_deterministic({})
    assert not is_deterministic({"temperature": 0.2})
    assert not is_deterministic({"temperature": False})
    assert not is_deterministic({"temperature": 0, "n": 3})


async def test_unencodable_options_pass_through_uncached() -> None:
    upstream = CountingLLM()
    llm = CachingLLM(upstream, MemoryCacheBackend(60))
    messages = _messages("odd option")
    for _ in range(2):
        await llm.complete(messages, temperature=0, marker=object())
    assert upstream.calls == 2 and llm.uncacheable == 2
    await llm.close()


# -- the in-process backend ---------------------------------------------------------------------


async def test_memory_backend_evicts_the_least_recently_used() -> None:
    backend = create_cache_backend("memory://?max_entries=2", ttl_s=60)
    assert isinstance(backend, MemoryCacheBackend)
    for key in ("a", "b"):
        await backend.put(key, CachedAnswer([key]))
    assert await backend.get("a") == CachedAnswer(["a"])  # "a" is now the most recent
    await backend.put("c", CachedAnswer(["c"]))
    assert await backend.get("b") is None
    assert await backend.get("a") is not None and await backend.get("c") is not None
    assert len(backend) == 2


@pytest.mark.parametrize(
    "url", ["memcached://x", "memory://?max_entries=0", "memory://?size=3", "memory://host"]
)
def test_bad_cache_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        create_cache_backend(url, ttl_s=60)


# -- across processes on Redis ------------------------------------------------------------------


async def test_two_clients_on_one_redis_make_one_upstream_call(redis_url: str) -> None:
    upstream = CountingLLM()
    upstream.gate.clear()
    first = CachingLLM(upstream, RedisCacheBackend(redis_url, 60))
    second_backend = RedisCacheBackend(redis_url, 60)
    second = CachingLLM(upstream, second_backend)
    messages = _messages("asked by two processes")
    leader = asyncio.create_task(first.complete(messages, temperature=0))
    await eventually(_true_when(lambda: upstream.calls == 1), 5, "the first upstream call")
    follower = asyncio.create_task(second.complete(messages, temperature=0))
    await eventually(_true_when(lambda: second_backend.waiting == 1), 5, "the second to wait")
    upstream.gate.set()
    assert await leader == await follower == answer_for(messages)
    assert upstream.calls == 1
    assert (second.hits, second.misses) == (1, 0)
    await first.close()
    await second.close()


async def test_a_waiter_calls_upstream_itself_after_its_timeout(redis_url: str) -> None:
    upstream = CountingLLM()
    upstream.gate.clear()
    first = CachingLLM(upstream, RedisCacheBackend(redis_url, 60))
    second = CachingLLM(upstream, RedisCacheBackend(redis_url, 60), wait_timeout_s=0.1)
    messages = _messages("slow leader")
    leader = asyncio.create_task(first.complete(messages, temperature=0))
    await eventually(_true_when(lambda: upstream.calls == 1), 5, "the first upstream call")
    follower = asyncio.create_task(second.complete(messages, temperature=0))
    await eventually(_true_when(lambda: upstream.calls == 2), 5, "the waiter to give up")
    upstream.gate.set()
    assert await leader == await follower == answer_for(messages)
    await first.close()
    await second.close()


async def test_a_lock_left_by_a_dead_process_expires(redis_url: str) -> None:
    upstream = CountingLLM()
    llm = CachingLLM(upstream, RedisCacheBackend(redis_url, 60))
    messages = _messages("orphaned lock")
    key = llm.key_for(messages, {"temperature": 0})
    assert key is not None
    dead = RedisCacheBackend(redis_url, 60, lock_ttl_s=0.2)
    assert await dead.lock(key, "dead-process")
    started = time.monotonic()
    assert await llm.complete(messages, temperature=0) == answer_for(messages)
    assert time.monotonic() - started >= 0.15  # it waited for the lock, not the timeout
    assert upstream.calls == 1
    await dead.close()
    await llm.close()


async def test_a_long_call_keeps_its_lock(redis_url: str) -> None:
    upstream = CountingLLM()
    upstream.gate.clear()
    first = CachingLLM(upstream, RedisCacheBackend(redis_url, 60, lock_ttl_s=0.1))
    second_backend = RedisCacheBackend(redis_url, 60, lock_ttl_s=0.1)
    second = CachingLLM(upstream, second_backend)
    messages = _messages("longer than the lock")
    leader = asyncio.create_task(first.complete(messages, temperature=0))
    await eventually(_true_when(lambda: upstream.calls == 1), 5, "the first upstream call")
    follower = asyncio.create_task(second.complete(messages, temperature=0))
    await eventually(_true_when(lambda: second_backend.waiting == 1), 5, "the second to wait")
    started = time.monotonic()
    # Several lock lifetimes pass: renewal keeps the follower waiting, not calling upstream.
    await eventually(_true_when(lambda: time.monotonic() - started > 0.35), 5, "0.35 s")
    assert upstream.calls == 1 and second_backend.waiting == 1
    upstream.gate.set()
    assert await leader == await follower
    assert upstream.calls == 1
    await first.close()
    await second.close()


async def test_an_unreachable_redis_only_costs_the_cache() -> None:
    upstream = CountingLLM()
    llm = CachingLLM(upstream, RedisCacheBackend(f"redis://127.0.0.1:{free_port()}/0", 60))
    messages = _messages("no redis")
    for _ in range(2):
        assert await llm.complete(messages, temperature=0) == answer_for(messages)
    assert upstream.calls == 2
    await llm.close()


# -- settings and the server --------------------------------------------------------------------


def test_settings_accept_cache_urls_and_refuse_others() -> None:
    assert Settings().llm_cache is None and Settings().llm_cache_ttl == 300
    for url in ("memory://", "redis://127.0.0.1:6390/0", "redis+cluster://h:7000"):
        assert Settings(llm_cache=url).llm_cache == url
    redis_store = {"store": "redis://127.0.0.1:6390/0", "allow_no_auth": True}
    assert Settings(llm_cache="redis", **redis_store).llm_cache == "redis"
    for bad in ({"llm_cache": "memcached://x"}, {"llm_cache": "redis"}, {"llm_cache_ttl": 0}):
        with pytest.raises(ValueError, match="llm_cache"):
            Settings(**bad)
    env = {"AGENTHOST_LLM_CACHE": "memory://", "AGENTHOST_LLM_CACHE_TTL": "12.5"}
    settings = Settings.from_env(env)
    assert (settings.llm_cache, settings.llm_cache_ttl) == ("memory://", 12.5)


async def test_bare_redis_means_the_stores_redis(redis_url: str) -> None:
    store = redis_url + "?max_connections=50&connect_timeout=1"
    llm = cached_llm(CountingLLM(), "redis", ttl_s=60, store_url=store)
    assert isinstance(llm.backend, RedisCacheBackend)
    messages = _messages("via the store's redis")
    await llm.complete(messages, temperature=0)
    assert await llm.complete(messages, temperature=0) == answer_for(messages)
    assert llm.backend.hits == 1
    await llm.close()
    with pytest.raises(ValueError, match="store"):
        cached_llm(CountingLLM(), "redis", ttl_s=60, store_url="sqlite:///x.db")


def _turn(server: AgentHostProcess, session_id: str, message: str) -> str:
    request = urllib.request.Request(
        f"{server.url}/v1/sessions/{session_id}/turns",
        data=json.dumps({"message": message}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body: dict[str, str] = json.load(response)
    return body["response"]


def test_a_server_with_llm_cache_asks_the_model_once_for_identical_turns(
    agenthost_factory: Callable[..., AgentHostProcess],
    llm_sim_server: LLMSimServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The server imports this module's agent, which asks at temperature 0.
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    server = agenthost_factory(
        app="tests.test_llm_cache:deterministic_agent",
        llm=llm_sim_server.base_url,
        llm_cache="memory://",
    )
    before = llm_sim_server.stats()["requests"]
    first = _turn(server, "cache-a", "the same question")
    second = _turn(server, "cache-b", "the same question")
    assert first == second == answer_for([{"role": "user", "content": "the same question"}])
    assert llm_sim_server.stats()["requests"] - before == 1
    _turn(server, "cache-c", "another question")
    assert llm_sim_server.stats()["requests"] - before == 2
