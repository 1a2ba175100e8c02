"""`agenthost llm-sim` over real HTTP: the official openai SDK (sync and async) parses its
answers, streamed and not; errors come in OpenAI's shape with the right status; the
`llm_sim` command's flags and environment variables."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import openai
import pytest
import typer
from multidict import CIMultiDictProxy
from openai.types.chat import ChatCompletionContentPartTextParam, ChatCompletionMessageParam
from typer.testing import CliRunner

from agenthost.llm.cli import llm_sim
from agenthost.llm.sim_model import SimSettings, SimulatedModel, answer_for
from tests.fixtures.llm import LLMSimServer

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is a lease?"},
]


def test_the_sync_openai_sdk_gets_valid_answers_streamed_and_not(
    llm_sim_server: LLMSimServer,
) -> None:
    client = openai.OpenAI(base_url=llm_sim_server.base_url, api_key="unused", max_retries=0)
    expected = answer_for(MESSAGES)
    reply = client.chat.completions.create(model="agenthost-sim", messages=MESSAGES)
    assert reply.choices[0].message.content == expected
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.object == "chat.completion" and reply.model == "agenthost-sim"
    assert reply.usage is not None and reply.usage.completion_tokens == len(expected.split(" "))
    assert reply.usage.prompt_tokens == 7

    stream = client.chat.completions.create(
        model="agenthost-sim",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, finish, usage, ids = [], None, None, set()
    for chunk in stream:
        ids.add(chunk.id)
        assert chunk.object == "chat.completion.chunk"
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        usage = chunk.usage or usage
    assert "".join(parts) == expected and len(parts) > 3
    assert finish == "stop" and len(ids) == 1
    assert usage is not None and usage.total_tokens == 7 + len(expected.split(" "))
    assert [m.id for m in client.models.list()] == ["agenthost-sim"]
    client.close()


async def test_the_async_openai_sdk_gets_the_same_answers(llm_sim_server: LLMSimServer) -> None:
    client = openai.AsyncOpenAI(base_url=llm_sim_server.base_url, api_key="unused")
    expected = answer_for(MESSAGES)
    reply = await client.chat.completions.create(model="agenthost-sim", messages=MESSAGES)
    assert reply.choices[0].message.content == expected
    stream = await client.chat.completions.create(
        model="agenthost-sim",
        messages=MESSAGES,
        stream=True,
    )
    parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert "".join(parts) == expected
    await client.close()


def test_content_parts_are_read_as_their_text(llm_sim_server: LLMSimServer) -> None:
    client = openai.OpenAI(base_url=llm_sim_server.base_url, api_key="unused")
    parts: list[ChatCompletionContentPartTextParam] = [
        {"type": "text", "text": "two "},
        {"type": "text", "text": "parts"},
    ]
    reply = client.chat.completions.create(
        model="agenthost-sim", messages=[{"role": "user", "content": parts}]
    )
    assert reply.choices[0].message.content == answer_for(
        [{"role": "user", "content": "two parts"}]
    )
    client.close()


async def test_a_stream_arrives_at_the_set_pace(
    llm_sim_factory: Callable[..., LLMSimServer],
) -> None:
    server = llm_sim_factory("--ttft-ms", "200", "--tokens-per-s", "40", "--words", "6")
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="unused")
    start = time.monotonic()
    stream = await client.chat.completions.create(
        model="agenthost-sim",
        messages=MESSAGES,
        stream=True,
    )
    arrivals = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - start)
    await client.close()
    assert len(arrivals) == len(answer_for(MESSAGES, 6).split(" "))
    assert arrivals[0] >= 0.2
    assert arrivals[-1] >= 0.2 + (len(arrivals) - 1) / 40


async def _post(
    http: aiohttp.ClientSession, url: str, body: bytes | Mapping[str, object]
) -> tuple[int, dict[str, Any], CIMultiDictProxy[str]]:
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
    async with http.post(f"{url}/chat/completions", **kwargs) as resp:
        return resp.status, await resp.json(), resp.headers


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "not valid JSON"),
        ({"model": "m"}, 422, "messages"),
        ({"model": 3, "messages": []}, 422, "model"),
        ({"model": "m", "messages": [{"content": "x"}]}, 422, "role"),
        ({"model": "m", "messages": []}, 400, "must not be empty"),
        ({"model": "error-500", "messages": [{"role": "user", "content": "x"}]}, 500, "500"),
        ({"model": "error-502", "messages": [{"role": "user", "content": "x"}]}, 502, "502"),
    ],
)
async def test_errors_have_openais_shape_and_status(
    llm_sim_server: LLMSimServer, body: bytes | Mapping[str, object], status: int, needle: str
) -> None:
    async with aiohttp.ClientSession() as http:
        got, payload, _ = await _post(http, llm_sim_server.base_url, body)
    assert got == status
    error = payload["error"]
    assert isinstance(error, dict) and set(error) == {"message", "type", "code", "param"}
    assert needle in error["message"]


async def test_injected_429_and_503_carry_retry_after(llm_sim_server: LLMSimServer) -> None:
    async with aiohttp.ClientSession() as http:
        for model, status, kind in (
            ("error-429", 429, "rate_limit_exceeded"),
            ("error-503", 503, "server_error"),
        ):
            body = {"model": model, "messages": MESSAGES}
            got, payload, headers = await _post(http, llm_sim_server.base_url, body)
            assert got == status
            assert payload["error"] == {
                "message": payload["error"]["message"],
                "type": kind,
                "code": kind,
                "param": None,
            }
            assert headers["retry-after-ms"] == "50"
            assert headers["retry-after"] == "1"


async def test_unknown_paths_and_methods_get_error_json(llm_sim_server: LLMSimServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{llm_sim_server.url}/v1/nothing") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["type"] == "not_found_error"
        async with http.get(f"{llm_sim_server.base_url}/chat/completions") as resp:
            assert resp.status == 405
            assert "error" in await resp.json()
        async with http.get(f"{llm_sim_server.url}/healthz") as resp:
            assert resp.status == 200 and await resp.json() == {"status": "ok"}


async def test_error_rate_over_http_follows_the_seed(
    llm_sim_factory: Callable[..., LLMSimServer],
) -> None:
    server = llm_sim_factory("--error-rate", "0.5", "--seed", "11")
    reference = SimulatedModel(SimSettings(error_rate=0.5, seed=11))
    expected = []
    for _ in range(30):
        try:
            reference.respond(MESSAGES)
            expected.append(200)
        except Exception:
            expected.append(503)
    got = []
    async with aiohttp.ClientSession() as http:
        for _ in range(30):
            status, _, _ = await _post(
                http, server.base_url, {"model": "agenthost-sim", "messages": MESSAGES}
            )
            got.append(status)
    assert got == expected and 200 in got and 503 in got
    assert server.stats() == {"requests": 30, "failures": got.count(503), "model": "agenthost-sim"}


async def test_settings_come_from_environment_variables(
    llm_sim_factory: Callable[..., LLMSimServer],
) -> None:
    server = llm_sim_factory(env={"AGENTHOST_LLM_SIM_MODEL": "env-model"})
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="unused")
    assert [m.id async for m in client.models.list()] == ["env-model"]
    await client.close()


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("llm-sim")(llm_sim)

    @app.command("version")
    def version() -> None:
        """A second command, so Typer keeps `llm-sim` as a named subcommand."""

    return app


def test_the_command_lists_every_flag_with_its_environment_variable() -> None:
    result = CliRunner().invoke(_cli(), ["llm-sim", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for flag in (
        "host",
        "port",
        "latency-ms",
        "ttft-ms",
        "tokens-per-s",
        "error-rate",
        "seed",
        "words",
        "retry-after-ms",
        "model",
    ):
        assert f"--{flag}" in result.output
        assert "AGENTHOST_LLM_SIM_" + flag.upper().replace("-", "_") in result.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--error-rate", "2"], "error_rate must be between 0 and 1"),
        (["--tokens-per-s", "-5"], "must be >= 0"),
        (["--port", "70000"], "port must be between 0 and 65535"),
        (["--words", "many"], "Invalid value for '--words'"),
    ],
)
def test_the_command_refuses_bad_values(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(_cli(), ["llm-sim", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert needle in result.output
