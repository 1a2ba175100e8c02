"""The seam between `OpenAILLM` and the openai SDK (`agenthost.llm.openai_requests`): both
request paths -- the lean one (the SDK's `post`, a msgspec body) and the typed fallback
(`chat.completions.create`) -- against a real `agenthost llm-sim`, the feature check that
picks the fallback, and the raw stream reader (server-sent events, error events)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import aiohttp.web
import openai
import pytest

from agenthost.llm import LLMUpstreamError
from agenthost.llm.openai import OpenAILLM, RetryPolicy, sse_data
from agenthost.llm.openai_requests import choose_requests, lean_requests_supported
from agenthost.llm.sim_model import answer_for
from tests.fixtures.agenthost import free_port
from tests.fixtures.llm import LLMSimServer

NO_RETRY = RetryPolicy(max_retries=0)


def _messages(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "typed"])
async def test_both_paths_answer_streamed_and_not(llm_sim_server: LLMSimServer, lean: bool) -> None:
    llm = OpenAILLM(llm_sim_server.base_url, model="agenthost-sim", retry=NO_RETRY, lean=lean)
    assert llm.requests.name == ("lean" if lean else "typed")
    messages = _messages(f"answer me {lean}")
    options = {"temperature": 0, "max_tokens": 200, "extra_headers": {"x-test": "1"}}
    assert await llm.complete(messages, **options) == answer_for(messages)
    tokens = [t async for t in llm.stream(messages, **options)]
    assert "".join(tokens) == answer_for(messages) and len(tokens) > 3
    await llm.close()


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "typed"])
async def test_both_paths_raise_the_mapped_status_error(
    llm_sim_server: LLMSimServer, lean: bool
) -> None:
    llm = OpenAILLM(llm_sim_server.base_url, model="error-500", retry=NO_RETRY, lean=lean)
    with pytest.raises(LLMUpstreamError, match="500"):
        await llm.complete(_messages("fail"))
    with pytest.raises(LLMUpstreamError, match="500"):
        _ = [t async for t in llm.stream(_messages("fail"))]
    await llm.close()


def test_an_sdk_outside_the_known_versions_gets_the_typed_path(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    client = openai.AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="unused")
    assert lean_requests_supported(client) is None
    assert choose_requests(client).name == "lean"
    monkeypatch.setattr(openai, "__version__", "4.1.0")
    assert "outside" in (lean_requests_supported(client) or "")
    with caplog.at_level("WARNING", logger="agenthost.llm"):
        assert choose_requests(client).name == "typed"
    assert "go through chat.completions.create" in caplog.text


def test_an_sdk_whose_post_takes_no_content_gets_the_typed_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = openai.AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="unused")

    async def post(path: str, *, cast_to: type, body: object = None) -> None: ...

    monkeypatch.setattr(client, "post", post)
    assert lean_requests_supported(client) == "AsyncOpenAI.post takes no raw content"
    assert choose_requests(client).name == "typed"


async def _pieces(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def test_events_are_read_across_pieces_and_line_endings() -> None:
    stream = _pieces(
        b': a comment\r\ndata: {"a"',
        b":1}\r\n\r\nevent: error\ndata: x\ndata: y\n\n",
        b"data: [DONE]",
    )
    events = [e async for e in sse_data(stream)]
    assert events == [(b"", b'{"a":1}'), (b"error", b"x\ny"), (b"", b"[DONE]")]


@pytest.fixture
def broken_llm() -> Iterator[str]:
    """A server that starts a stream, then sends an error event (as OpenAI does mid-stream)."""
    import asyncio
    import threading

    chunk = {"choices": [{"index": 0, "delta": {"content": "Hello"}}]}
    error = {"error": {"message": "the model overloaded", "type": "server_error"}}

    async def completions(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(f"data: {json.dumps(error)}\n\n".encode())
        await response.write_eof()
        return response

    port = free_port()
    loop = asyncio.new_event_loop()
    app = aiohttp.web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    runner = aiohttp.web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(aiohttp.web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/v1"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "typed"])
async def test_an_error_event_inside_a_stream_ends_it_with_an_upstream_error(
    broken_llm: str, lean: bool
) -> None:
    llm = OpenAILLM(broken_llm, model="m", retry=NO_RETRY, lean=lean)
    tokens: list[str] = []
    with pytest.raises(LLMUpstreamError, match="the model overloaded"):
        async for token in llm.stream(_messages("hi")):
            tokens.append(token)
    assert tokens == ["Hello"]
    await llm.close()


async def test_agents_reach_the_sdk_for_its_typed_objects(llm_sim_server: LLMSimServer) -> None:
    llm = OpenAILLM(llm_sim_server.base_url, model="agenthost-sim", retry=NO_RETRY)
    messages = _messages("typed please")
    completion = await llm.sdk.chat.completions.create(model="agenthost-sim", messages=messages)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == answer_for(messages)
    await llm.close()
