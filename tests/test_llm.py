"""`create_llm`: which client a URL gives, the errors a bad URL gets, the LLM error
hierarchy, and agenthost itself answering turns through an OpenAI-compatible server."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest

from agenthost.core.errors import AgentError
from agenthost.llm import (
    DEFAULT_MODEL,
    LLMClient,
    LLMError,
    LLMRateLimited,
    LLMRejected,
    LLMTimeout,
    LLMUpstreamError,
    create_llm,
)
from agenthost.llm.openai import OpenAILLM
from agenthost.llm.sim_client import SimLLM
from agenthost.llm.sim_model import answer_for
from tests.fixtures.agenthost import AgentHostProcess
from tests.fixtures.llm import LLMSimServer
from tests.test_streaming import parse_sse

MESSAGES = [{"role": "user", "content": "What is a lease?"}]


async def test_sim_urls_give_the_in_process_simulator() -> None:
    plain = create_llm("sim://")
    assert isinstance(plain, SimLLM) and isinstance(plain, LLMClient)
    assert plain.model == DEFAULT_MODEL == "agenthost-sim"
    assert await plain.complete(MESSAGES) == answer_for(MESSAGES)

    tuned = create_llm("sim://?latency_ms=5&ttft_ms=1&tokens_per_s=900&seed=3&words=2")
    assert isinstance(tuned, SimLLM)
    s = tuned.settings
    assert (s.latency_ms, s.ttft_ms, s.tokens_per_s, s.seed, s.words) == (5, 1, 900, 3, 2)
    assert await tuned.complete(MESSAGES) == answer_for(MESSAGES, 2, 3)

    named = create_llm("sim://?seed=1", model="my-model")
    assert named.model == "my-model"


async def test_http_urls_give_an_openai_client() -> None:
    default = create_llm("http://127.0.0.1:9/v1")
    assert isinstance(default, OpenAILLM) and isinstance(default, LLMClient)
    assert (default.model, default.base_url) == (DEFAULT_MODEL, "http://127.0.0.1:9/v1")
    await default.close()
    named = create_llm("HTTPS://api.example.com/v1", model="gpt-x", api_key="k", timeout=3)
    assert isinstance(named, OpenAILLM) and named.model == "gpt-x"
    await named.close()


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("ftp://example.com/v1", "unknown LLM URL 'ftp://example.com/v1': expected sim://"),
        ("", "unknown LLM URL ''"),
        ("localhost:9000/v1", "unknown LLM URL"),
        ("sim://?speed=fast", r"unknown sim:// option\(s\) \['speed'\]"),
        ("sim://?latency_ms=soon", "bad sim:// option"),
        ("sim://?error_rate=2", "error_rate must be between 0 and 1"),
        ("sim://?tokens_per_s=-1", "must be >= 0"),
        ("sim://somehost", r"only \?options"),
        ("http:///v1", "has no host"),
    ],
)
def test_bad_urls_are_refused_with_a_clear_message(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_llm(url)


def test_a_non_positive_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="timeout must be > 0"):
        create_llm("http://127.0.0.1:9/v1", timeout=0)


def test_every_llm_error_has_a_code_and_fails_the_turn_as_a_502() -> None:
    expected = {
        LLMError: ("llm_error", False),
        LLMRateLimited: ("llm_rate_limited", True),
        LLMUpstreamError: ("llm_unavailable", True),
        LLMTimeout: ("llm_timeout", True),
        LLMRejected: ("llm_rejected", False),
    }
    for cls, (code, retryable) in expected.items():
        error = cls("it broke", upstream_status=418, upstream_retry_after=1.5)
        assert isinstance(error, AgentError) and isinstance(error, LLMError)
        assert (error.code, error.retryable, error.status) == (code, retryable, 502)
        assert (error.message, error.upstream_status, error.upstream_retry_after) == (
            "it broke",
            418,
            1.5,
        )
        # Not our own Retry-After: the model's rate limit says nothing about this server.
        assert error.retry_after is None


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
        assert body["response"] == answer_for([{"role": "user", "content": "via the SDK"}])
        async with http.post(
            f"{server.url}/v1/sessions/o1/turns", json={"message": "streamed", "stream": True}
        ) as resp:
            text = await resp.text()
        events = parse_sse(text)
        chunks = [data["text"] for _, kind, data in events if kind == "chunk"]
        # How many chunks arrive depends on how reads and the loop batch tokens (one, when
        # they all land in one read): what matters is that they join to the committed answer.
        assert chunks and events[-1][1] == "done"
        history = [
            {"role": "user", "content": "via the SDK"},
            {"role": "assistant", "content": body["response"]},
            {"role": "user", "content": "streamed"},
        ]
        assert "".join(chunks) == events[-1][2]["response"] == answer_for(history)


async def test_agenthost_fails_the_turn_with_the_llm_code(
    agenthost_factory: Callable[..., AgentHostProcess],
) -> None:
    server = agenthost_factory(llm="sim://", llm_model="error-429")
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{server.url}/v1/sessions/o2/turns", json={"message": "rate limited"}) as resp,
    ):
        assert resp.status == 502
        body = await resp.json()
    assert body["error"]["code"] == "llm_rate_limited"
