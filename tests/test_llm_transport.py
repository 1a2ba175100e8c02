"""`OpenAILLM` over each of the openai SDK's HTTP transports (`aiohttp`, `httpx`) against a real
`agenthost llm-sim` process: the same answers, retries and errors whichever carries the
requests, and `close()` gives every connection back. Also: the setting reaches the client."""

from __future__ import annotations

import asyncio
import time

import openai
import psutil
import pytest

from agenthost.core.settings import Settings
from agenthost.llm import LLMRateLimited, LLMTimeout, LLMUpstreamError, create_llm
from agenthost.llm.openai import (
    DEFAULT_LLM_TRANSPORT,
    LLM_TRANSPORTS,
    LLMTransport,
    OpenAILLM,
    RetryPolicy,
    http_client_for,
)
from agenthost.llm.sim_model import answer_for
from tests.fixtures.agenthost import free_port
from tests.fixtures.llm import LLMSimServer

# Backoff far below the simulator's Retry-After (50 ms), so waits prove it is honoured.
FAST = RetryPolicy(max_retries=2, initial_backoff_s=0.001, max_backoff_s=0.002)

each_transport = pytest.mark.parametrize("transport", LLM_TRANSPORTS)


def _messages(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


def _open_connections_to(port: int) -> set[int]:
    """Local ports of this process's established TCP connections to `port` on loopback."""
    return {
        c.laddr.port
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    }


@each_transport
async def test_streamed_and_whole_answers_are_the_simulators(
    llm_sim_server: LLMSimServer, transport: LLMTransport
) -> None:
    llm = OpenAILLM(llm_sim_server.base_url, model="agenthost-sim", retry=FAST, transport=transport)
    assert llm.transport == transport
    messages = _messages(f"answer me over {transport}")
    assert await llm.complete(messages, temperature=0) == answer_for(messages)
    tokens = [t async for t in llm.stream(messages)]
    assert "".join(tokens) == answer_for(messages) and len(tokens) > 3
    # Concurrent calls share the client's connection pool and each gets its own answer.
    prompts = [_messages(f"call {i} over {transport}") for i in range(20)]
    answers = await asyncio.gather(*(llm.complete(p) for p in prompts))
    assert answers == [answer_for(p) for p in prompts]
    assert llm.retries == 0
    await llm.close()


@each_transport
async def test_a_429_is_retried_after_its_retry_after_into_an_answer(
    llm_sim_server: LLMSimServer, transport: LLMTransport
) -> None:
    llm = OpenAILLM(llm_sim_server.base_url, model="error-429-x2", retry=FAST, transport=transport)
    messages = _messages(f"rate limited twice over {transport}, then fine")
    before = llm_sim_server.stats()["requests"]
    start = time.monotonic()
    assert await llm.complete(messages) == answer_for(messages)
    assert time.monotonic() - start >= 2 * 0.05  # the server's Retry-After, not the backoff
    assert llm_sim_server.stats()["requests"] - before == 3
    assert llm.retries == 2
    await llm.close()


@each_transport
async def test_a_lasting_429_raises_rate_limited_with_the_servers_retry_after(
    llm_sim_server: LLMSimServer, transport: LLMTransport
) -> None:
    llm = OpenAILLM(llm_sim_server.base_url, model="error-429", retry=FAST, transport=transport)
    with pytest.raises(LLMRateLimited) as raised:
        _ = [t async for t in llm.stream(_messages(f"always 429 over {transport}"))]
    assert raised.value.upstream_status == 429
    assert raised.value.upstream_retry_after == 0.05
    assert llm.retries == 2 and "after 2 retries" in raised.value.message
    await llm.close()


@each_transport
async def test_an_unreachable_server_is_unavailable_not_a_timeout(
    transport: LLMTransport,
) -> None:
    # The aiohttp adapter reports a refused connection as a connect timeout; we do not.
    llm = OpenAILLM(
        f"http://127.0.0.1:{free_port()}/v1", model="m", retry=FAST, transport=transport
    )
    with pytest.raises(LLMUpstreamError, match="cannot reach the LLM") as raised:
        await llm.complete(_messages("anyone?"))
    assert raised.value.code == "llm_unavailable" and llm.retries == 2
    await llm.close()


@each_transport
async def test_a_model_that_never_answers_times_out(
    llm_sim_server: LLMSimServer, transport: LLMTransport
) -> None:
    llm = OpenAILLM(
        llm_sim_server.base_url,
        model="error-timeout",
        timeout=0.3,
        retry=RetryPolicy(max_retries=0),
        transport=transport,
    )
    start = time.monotonic()
    with pytest.raises(LLMTimeout):
        await llm.complete(_messages(f"are you there, {transport}?"))
    assert 0.3 <= time.monotonic() - start < 5
    await llm.close()


@each_transport
async def test_close_releases_every_connection(
    llm_sim_server: LLMSimServer, transport: LLMTransport
) -> None:
    port = llm_sim_server.port
    already_open = _open_connections_to(port)
    llm = OpenAILLM(llm_sim_server.base_url, model="agenthost-sim", transport=transport)
    prompts = [_messages(f"keep a connection {i}") for i in range(8)]
    await asyncio.gather(*(llm.complete(p) for p in prompts))
    ours = _open_connections_to(port) - already_open
    assert ours, "the client keeps its connections open between calls"
    was_closed = llm.closed
    await llm.close()
    assert (was_closed, llm.closed) == (False, True)
    deadline = time.monotonic() + 5
    while ours & _open_connections_to(port):
        assert time.monotonic() < deadline, "connections still open after close()"
        await asyncio.sleep(0.01)  # the sockets close on the loop's next turns
    with pytest.raises(RuntimeError, match="client has been closed"):
        await llm.complete(prompts[0])


@each_transport
async def test_the_transport_reaches_the_client_from_settings_and_create_llm(
    llm_sim_server: LLMSimServer, transport: LLMTransport
) -> None:
    settings = Settings.from_env({"AGENTHOST_LLM_TRANSPORT": transport})
    assert settings.llm_transport == transport
    llm = create_llm(llm_sim_server.base_url, transport=settings.llm_transport)
    assert isinstance(llm, OpenAILLM) and llm.transport == transport
    client = http_client_for(transport)
    if transport == "aiohttp":
        assert isinstance(client, openai.DefaultAioHttpClient)
        await client.aclose()
    else:
        assert client is None  # the SDK builds its own httpx client
    messages = _messages(f"through create_llm over {transport}")
    assert await llm.complete(messages) == answer_for(messages)
    await llm.close()


async def test_the_default_is_the_measured_cheaper_transport_and_others_are_refused() -> None:
    assert Settings().llm_transport == DEFAULT_LLM_TRANSPORT == "aiohttp"
    default = create_llm("http://127.0.0.1:9/v1")
    assert isinstance(default, OpenAILLM) and default.transport == DEFAULT_LLM_TRANSPORT
    await default.close()
    with pytest.raises(ValueError, match="llm_transport must be aiohttp or httpx"):
        Settings(llm_transport="curl")
    with pytest.raises(ValueError, match="unknown LLM transport 'curl'"):
        create_llm("http://127.0.0.1:9/v1", transport="curl")
    # The simulator has no HTTP transport: the setting is accepted and unused.
    sim = create_llm("sim://", transport="httpx")
    assert not isinstance(sim, OpenAILLM)
    await sim.close()
