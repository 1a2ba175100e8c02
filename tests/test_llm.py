"""The LLM side: the official openai SDK against `agenthost llm-sim` (a real-client
compatibility test), agenthost serving through it, and the simulator's determinism."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import openai
import pytest

from agenthost.llm import LLMRateLimited, LLMUpstreamError, create_llm
from agenthost.llm.simulated import answer_for, settings_from_url
from tests.fixtures.agenthost import AgentHostProcess
from tests.fixtures.llm import LLMSimServer

MESSAGES = [{"role": "user", "content": "What is a lease?"}]


def test_the_openai_sdk_gets_valid_answers_streamed_and_not(llm_sim_server: LLMSimServer) -> None:
    client = openai.OpenAI(base_url=llm_sim_server.base_url, api_key="unused")
    expected = answer_for(MESSAGES, 8, 0)
    reply = client.chat.completions.create(model="agenthost-sim", messages=MESSAGES)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == expected
    assert reply.choices[0].finish_reason == "stop" and reply.usage is not None
    stream = client.chat.completions.create(
        model="agenthost-sim", messages=MESSAGES, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    )  # fmt: skip
    parts, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert "".join(parts) == expected and len(parts) > 3 and usage is not None
    assert [m.id for m in client.models.list()] == ["agenthost-sim"]


async def test_the_async_client_and_error_mapping(llm_sim_server: LLMSimServer) -> None:
    llm = create_llm(llm_sim_server.base_url, model="agenthost-sim")
    assert await llm.complete(MESSAGES) == answer_for(MESSAGES, 8, 0)
    assert "".join([t async for t in llm.stream(MESSAGES)]) == answer_for(MESSAGES, 8, 0)
    await llm.close()
    for model, error in (("error-429", LLMRateLimited), ("error-500", LLMUpstreamError)):
        failing = create_llm(llm_sim_server.base_url, model=model)
        with pytest.raises(error):
            await failing.complete(MESSAGES)
        await failing.close()


async def test_agenthost_serves_turns_through_an_openai_compatible_server(
    agenthost_factory: Callable[..., AgentHostProcess], llm_sim_server: LLMSimServer
) -> None:
    server = agenthost_factory(
        llm=llm_sim_server.base_url, llm_model="agenthost-sim", chunk_coalesce_ms=0
    )
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{server.url}/v1/sessions/o1/turns", json={"message": "via the SDK"}
        ) as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["response"].startswith("sim: via the SDK | ")
        async with http.post(
            f"{server.url}/v1/sessions/o1/turns", json={"message": "streamed", "stream": True}
        ) as resp:
            text = await resp.text()
        assert text.count("event: chunk") > 3 and "event: done" in text


def test_sim_urls_and_determinism() -> None:
    s = settings_from_url("sim://?latency_ms=2000&tokens_per_s=50&seed=3")
    assert (s.latency_ms, s.tokens_per_s, s.seed) == (2000, 50, 3)
    with pytest.raises(ValueError, match="unknown sim"):
        settings_from_url("sim://?speed=fast")
    with pytest.raises(ValueError, match="unknown LLM URL"):
        create_llm("ftp://x")
    assert answer_for(MESSAGES, 8, 1) == answer_for(MESSAGES, 8, 1) != answer_for(MESSAGES, 8, 2)
