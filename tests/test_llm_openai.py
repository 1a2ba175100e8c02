"""`OpenAILLM` against a real `agenthost llm-sim` process: answers streamed and not, retries
of 429/5xx/timeouts that honour Retry-After and stop at their bound, and each failure
mapped to its `LLMError`."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable

import pytest

from agenthost.llm import LLMRateLimited, LLMRejected, LLMTimeout, LLMUpstreamError
from agenthost.llm.openai import OpenAILLM, RetryPolicy, retry_after_s
from agenthost.llm.sim_model import answer_for
from tests.fixtures.agenthost import free_port
from tests.fixtures.llm import LLMSimServer

# Backoff far below the simulator's Retry-After (50 ms), so waits prove it is honoured.
FAST = RetryPolicy(max_retries=2, initial_backoff_s=0.001, max_backoff_s=0.002)


def _messages(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


async def test_complete_and_stream_return_the_simulators_answer(
    llm_sim_server: LLMSimServer,
) -> None:
    llm = OpenAILLM(llm_sim_server.base_url, model="agenthost-sim", retry=FAST)
    messages = _messages("answer me")
    assert await llm.complete(messages, temperature=0) == answer_for(messages)
    tokens = [t async for t in llm.stream(messages)]
    assert "".join(tokens) == answer_for(messages) and len(tokens) > 3
    assert llm.retries == 0
    await llm.close()


@pytest.mark.parametrize(
    ("model", "error", "status"),
    [("error-429", LLMRateLimited, 429), ("error-503", LLMUpstreamError, 503)],
)
async def test_retries_honour_retry_after_then_raise_the_mapped_error(
    llm_sim_server: LLMSimServer, model: str, error: type[Exception], status: int
) -> None:
    llm = OpenAILLM(llm_sim_server.base_url, model=model, retry=FAST)
    before = llm_sim_server.stats()["requests"]
    start = time.monotonic()
    with pytest.raises(error) as raised:
        await llm.complete(_messages(f"always {status}"))
    took = time.monotonic() - start
    assert llm_sim_server.stats()["requests"] - before == 3  # the call and its 2 retries
    assert llm.retries == 2
    assert took >= 2 * 0.05  # each retry waited the server's Retry-After, not the backoff
    assert isinstance(raised.value, LLMUpstreamError | LLMRateLimited)
    assert raised.value.upstream_status == status
    assert raised.value.upstream_retry_after == 0.05
    assert "after 2 retries" in raised.value.message
    await llm.close()


async def test_a_500_is_retried_on_the_backoff_alone(llm_sim_server: LLMSimServer) -> None:
    llm = OpenAILLM(llm_sim_server.base_url, model="error-500", retry=FAST)
    with pytest.raises(LLMUpstreamError) as raised:
        await llm.complete(_messages("always 500"))
    assert (raised.value.code, raised.value.upstream_status) == ("llm_unavailable", 500)
    assert llm.retries == 2
    await llm.close()


async def test_a_transient_failure_is_retried_into_an_answer(
    llm_sim_server: LLMSimServer,
) -> None:
    llm = OpenAILLM(llm_sim_server.base_url, model="error-429-x2", retry=FAST)
    messages = _messages("rate limited twice, then fine")
    assert await llm.complete(messages) == answer_for(messages)
    assert llm.retries == 2
    stream_llm = OpenAILLM(llm_sim_server.base_url, model="error-503-x1", retry=FAST)
    streamed = _messages("a stream that fails once before it starts")
    assert "".join([t async for t in stream_llm.stream(streamed)]) == answer_for(streamed)
    assert stream_llm.retries == 1
    await llm.close()
    await stream_llm.close()


async def test_a_retry_after_beyond_the_bound_is_not_waited_for(
    llm_sim_server: LLMSimServer,
) -> None:
    policy = RetryPolicy(max_retries=5, max_retry_after_s=0.01)
    llm = OpenAILLM(llm_sim_server.base_url, model="error-429", retry=policy)
    with pytest.raises(LLMRateLimited):
        await llm.complete(_messages("too long to wait"))
    assert llm.retries == 0
    await llm.close()


async def test_a_request_the_server_refuses_is_not_retried(llm_sim_server: LLMSimServer) -> None:
    llm = OpenAILLM(llm_sim_server.base_url, model="agenthost-sim", retry=FAST)
    with pytest.raises(LLMRejected) as raised:
        await llm.complete([])
    assert (raised.value.code, raised.value.upstream_status) == ("llm_rejected", 400)
    assert llm.retries == 0
    await llm.close()


async def test_a_model_that_never_answers_times_out_each_attempt(
    llm_sim_server: LLMSimServer,
) -> None:
    llm = OpenAILLM(
        llm_sim_server.base_url,
        model="error-timeout",
        timeout=0.3,
        retry=RetryPolicy(max_retries=1, initial_backoff_s=0.001),
    )
    start = time.monotonic()
    with pytest.raises(LLMTimeout) as raised:
        await llm.complete(_messages("are you there?"))
    assert time.monotonic() - start >= 2 * 0.3
    assert raised.value.code == "llm_timeout" and llm.retries == 1
    await llm.close()


async def test_an_unreachable_server_is_retried_then_unavailable() -> None:
    llm = OpenAILLM(f"http://127.0.0.1:{free_port()}/v1", model="m", retry=FAST)
    with pytest.raises(LLMUpstreamError, match="cannot reach the LLM"):
        await llm.complete(_messages("anyone?"))
    assert llm.retries == 2
    await llm.close()


async def test_a_stream_cut_after_its_first_token_is_not_retried(
    llm_sim_factory: Callable[..., LLMSimServer],
) -> None:
    # A second apart: the kill lands before the second token however loaded the machine is.
    server = llm_sim_factory("--tokens-per-s", "1", "--words", "20")
    llm = OpenAILLM(server.base_url, model="agenthost-sim", retry=FAST)
    tokens: list[str] = []
    with pytest.raises(LLMUpstreamError):
        async for token in llm.stream(_messages("slow stream")):
            tokens.append(token)
            if len(tokens) == 1:
                server.kill()
    # A retry would have restarted the answer and repeated "sim:" to the caller.
    assert tokens == ["sim:"] and llm.retries == 0
    await llm.close()


def test_backoff_is_jittered_exponential_and_at_least_retry_after() -> None:
    policy = RetryPolicy(initial_backoff_s=0.5, max_backoff_s=4.0)
    for retry, ceiling in enumerate([0.5, 1.0, 2.0, 4.0, 4.0, 4.0]):
        delays = {policy.backoff_s(retry) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1
    assert policy.backoff_s(0, retry_after_s=3.0) == 3.0
    assert policy.backoff_s(100) <= 4.0
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=-1)


def test_retry_after_is_read_in_milliseconds_seconds_or_as_a_date() -> None:
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_s({"retry-after-ms": "soon", "retry-after": "2"}) == 2.0
    assert retry_after_s({"retry-after": "-3"}) == 0.0
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 <= (retry_after_s({"retry-after": in_a_minute}) or 0) <= 60
    assert retry_after_s({"retry-after": "whenever"}) is None
    assert retry_after_s({"retry-after": "nan"}) is None
    assert retry_after_s({}) is None
