"""The simulated model and `SimLLM`: deterministic answers tied to their prompt, the pace
they arrive at (lower bounds only), seeded and named failure injection, a free hot path."""

from __future__ import annotations

import time
from collections.abc import Awaitable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agenthost.core.settings import Settings
from agenthost.llm import LLMError, LLMRateLimited, LLMTimeout, LLMUpstreamError, create_llm
from agenthost.llm.sim_client import SimLLM
from agenthost.llm.sim_model import (
    Fault,
    SimSettings,
    SimulatedModel,
    answer_for,
    parse_fault,
    settings_from_url,
    split_tokens,
)

HISTORY = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "first question"},
    {"role": "assistant", "content": "first answer"},
    {"role": "user", "content": "What is a fence?"},
]


def test_the_answer_echoes_the_last_user_message_then_words_from_the_prompt() -> None:
    text = answer_for(HISTORY, 8, 0)
    head, tail = text.split(" | ")
    assert head == "sim: What is a fence?"
    assert len(tail.split(" ")) == 8
    assert answer_for(HISTORY, 8, 0) == text
    assert answer_for(HISTORY, 0, 0) == "sim: What is a fence?"
    assert len(answer_for(HISTORY, 200, 0).split(" | ")[1].split(" ")) == 200


def test_the_answer_depends_on_the_whole_prompt_and_the_seed() -> None:
    text = answer_for(HISTORY)
    other_history = [*HISTORY[:2], {"role": "assistant", "content": "other"}, HISTORY[3]]
    assert answer_for(other_history).startswith("sim: What is a fence? | ")
    tails = {
        text,
        answer_for(other_history),
        answer_for(HISTORY, seed=1),
        answer_for(HISTORY[1:]),
        # Roles count, not only contents.
        answer_for([{**m, "role": "user"} for m in HISTORY]),
    }
    assert len(tails) == 5


@given(st.text())
def test_tokens_join_back_to_the_text(text: str) -> None:
    tokens = split_tokens(text)
    assert "".join(tokens) == text
    assert all(t.startswith(" ") for t in tokens[1:])


def test_instant_complete_returns_without_suspending() -> None:
    llm = SimLLM()
    coro = llm.complete(HISTORY)
    # Driving the coroutine by hand: it must finish on the first step, proving it neither
    # sleeps nor waits on a task, so it adds nothing but CPU to a benchmarked turn.
    with pytest.raises(StopIteration) as done:
        coro.send(None)
    assert done.value.value == answer_for(HISTORY)


async def _timed(awaitable: Awaitable[str]) -> tuple[str, float]:
    start = time.monotonic()
    result = await awaitable
    return result, time.monotonic() - start


async def test_latency_is_the_time_of_a_non_streamed_answer() -> None:
    text, took = await _timed(SimLLM.from_url("sim://?latency_ms=150").complete(HISTORY))
    assert text == answer_for(HISTORY)
    assert took >= 0.15


async def test_without_latency_a_non_streamed_answer_takes_as_long_as_its_stream() -> None:
    llm = SimLLM.from_url("sim://?ttft_ms=60&tokens_per_s=100&words=8")
    text, took = await _timed(llm.complete(HISTORY))
    assert took >= 0.06 + (len(split_tokens(text)) - 1) / 100


async def test_a_stream_honours_time_to_first_token_and_tokens_per_second() -> None:
    llm = SimLLM.from_url("sim://?ttft_ms=100&tokens_per_s=50&words=10")
    start = time.monotonic()
    arrivals: list[tuple[str, float]] = []
    async for token in llm.stream(HISTORY):
        arrivals.append((token, time.monotonic() - start))
    tokens = [t for t, _ in arrivals]
    assert "".join(tokens) == answer_for(HISTORY, 10)
    assert tokens == split_tokens(answer_for(HISTORY, 10))
    assert arrivals[0][1] >= 0.1
    assert arrivals[-1][1] >= 0.1 + (len(tokens) - 1) / 50


async def test_a_stream_of_a_latency_only_model_starts_after_the_latency() -> None:
    llm = SimLLM.from_url("sim://?latency_ms=120")
    start = time.monotonic()
    first = await anext(aiter(llm.stream(HISTORY)))
    assert first == "sim:"
    assert time.monotonic() - start >= 0.12


async def _failure_pattern(llm: SimLLM, n: int) -> list[bool]:
    pattern = []
    for _ in range(n):
        try:
            await llm.complete(HISTORY)
            pattern.append(False)
        except LLMUpstreamError as exc:
            assert (exc.code, exc.upstream_status) == ("llm_unavailable", 503)
            pattern.append(True)
    return pattern


async def test_error_rate_draws_are_reproducible_from_the_seed() -> None:
    first = await _failure_pattern(SimLLM.from_url("sim://?error_rate=0.5&seed=7"), 60)
    again = await _failure_pattern(SimLLM.from_url("sim://?error_rate=0.5&seed=7"), 60)
    other = await _failure_pattern(SimLLM.from_url("sim://?error_rate=0.5&seed=8"), 60)
    assert first == again
    assert first != other
    assert 10 < sum(first) < 50


async def test_error_rate_one_fails_every_call_and_every_stream_before_a_token() -> None:
    llm = create_llm("sim://?error_rate=1")
    with pytest.raises(LLMUpstreamError, match="simulated"):
        await llm.complete(HISTORY)
    tokens: list[str] = []
    with pytest.raises(LLMUpstreamError):
        async for token in llm.stream(HISTORY):
            tokens.append(token)
    assert tokens == []


@pytest.mark.parametrize(
    ("model", "error", "status"),
    [
        ("error-429", LLMRateLimited, 429),
        ("error-500", LLMUpstreamError, 500),
        ("error-502", LLMUpstreamError, 502),
        ("error-503", LLMUpstreamError, 503),
        ("error-timeout", LLMTimeout, None),
    ],
)
async def test_a_model_name_injects_that_failure(
    model: str, error: type[LLMError], status: int | None
) -> None:
    llm = create_llm("sim://?retry_after_ms=250", model=model)
    with pytest.raises(error) as raised:
        await llm.complete(HISTORY)
    assert raised.value.upstream_status == status
    if status in (429, 503):
        assert raised.value.upstream_retry_after == 0.25


async def test_a_counted_fault_fails_only_the_first_requests_of_each_prompt() -> None:
    llm = create_llm("sim://", model="error-503-x2")
    other = [{"role": "user", "content": "another prompt"}]
    for _ in range(2):
        with pytest.raises(LLMUpstreamError):
            await llm.complete(HISTORY)
    assert await llm.complete(HISTORY) == answer_for(HISTORY)
    with pytest.raises(LLMUpstreamError):
        await llm.complete(other)


def test_fault_names() -> None:
    assert parse_fault("error-429") == Fault("429")
    assert parse_fault("error-timeout-x3") == Fault("timeout", 3)
    assert parse_fault("agenthost-sim") is None
    assert parse_fault("error-418") is None
    assert parse_fault("error-429-x") is None


def test_the_model_counts_requests_and_failures() -> None:
    sim = SimulatedModel(SimSettings(error_rate=1))
    for _ in range(3):
        with pytest.raises(LLMUpstreamError):
            sim.respond(HISTORY)
    assert (sim.requests, sim.failures) == (3, 3)


def test_settings_from_url_reads_every_option() -> None:
    s = settings_from_url(
        "sim://?latency_ms=2000&ttft_ms=300&tokens_per_s=50&error_rate=0.01&seed=3"
        "&words=4&retry_after_ms=20&model=m1"
    )
    assert s == SimSettings(
        latency_ms=2000,
        ttft_ms=300,
        tokens_per_s=50,
        error_rate=0.01,
        seed=3,
        words=4,
        retry_after_ms=20,
        model="m1",
    )
    assert settings_from_url("sim://") == SimSettings()
    assert settings_from_url("sim:///") == SimSettings()
    with pytest.raises(ValueError, match="not a sim:// URL"):
        settings_from_url("http://x")
    with pytest.raises(ValueError, match="words must be between 0 and 100000"):
        settings_from_url("sim://?words=-1")


async def test_the_default_llm_streams_at_a_human_pace_and_plain_sim_stays_instant() -> None:
    """`agenthost serve` without --llm: a first streamed turn is seen to stream (several
    tokens, a short wait for the first, tens of milliseconds between them); `sim://` as
    written stays instant for tests and benchmarks."""
    llm = create_llm(Settings().llm)
    start = time.monotonic()
    arrivals = []
    async for _ in llm.stream([{"role": "user", "content": "stream it"}]):
        arrivals.append(time.monotonic() - start)
    assert len(arrivals) >= 8
    assert 0.1 <= arrivals[0] < 1.0
    mean_gap = (arrivals[-1] - arrivals[0]) / (len(arrivals) - 1)
    assert mean_gap >= 0.03 and arrivals[-1] < 3.0  # 25 tokens/s: 40 ms apart
    for plain in ("sim://", "sim://?words=0"):
        assert SimulatedModel(settings_from_url(plain)).instant, plain
