"""`agenthost llm-sim`: an OpenAI-compatible chat-completions server backed by the simulated
model, for development, tests and load tests.

It answers `POST /v1/chat/completions` (JSON, or SSE chunks ending `data: [DONE]` with
`stream: true`), `GET /v1/models`, `GET /healthz` and `GET /stats`; every error is OpenAI's
error JSON with its status. Failures are injected by `error_rate` (503 + Retry-After) and by
model name: `error-429` (429 + Retry-After), `error-500`, `error-502`, `error-503`,
`error-timeout` (never answers), each with an optional `-x<N>` to fail only the first N
requests of each prompt.

A request that offers `tools` and whose newest message is the user's naming one of them is
answered with a call of that tool (`finish_reason: tool_calls`), streamed or not, the way
OpenAI sends one; the tool's result in the next request is quoted in the answer
(`sim_tools.py`).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from agenthost.llm.errors import LLMError, LLMTimeout
from agenthost.llm.sim_model import SimSettings, SimulatedModel, split_tokens
from agenthost.llm.sim_tools import SimToolCall, tool_call_for

__all__ = ["build_llm_sim_app", "run_llm_sim"]

JSON = "application/json"
_STALL_S = 600.0
"""How long an `error-timeout` request is held at most (its client gives up long before)."""


class ContentPart(msgspec.Struct):
    type: str
    text: str | None = None


class ChatMessageIn(msgspec.Struct):
    role: str
    content: str | list[ContentPart] | None = None
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class ChatRequest(msgspec.Struct):
    """The fields the simulator reads; the others (temperature, max_tokens, ...) are
    accepted and ignored, as the answer depends only on the messages and the seed."""

    model: str
    messages: list[ChatMessageIn]
    stream: bool | None = False
    tools: list[dict[str, Any]] | None = None
    stream_options: StreamOptions | None = None


class Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class FunctionOut(msgspec.Struct):
    name: str
    arguments: str


class ToolCallOut(msgspec.Struct):
    id: str
    function: FunctionOut
    type: str = "function"


class MessageOut(msgspec.Struct):
    role: str
    content: str | None
    tool_calls: list[ToolCallOut] | None = None


class Choice(msgspec.Struct):
    index: int
    message: MessageOut
    finish_reason: str
    logprobs: None = None


class ChatCompletion(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    object: str = "chat.completion"


class ModelInfo(msgspec.Struct):
    id: str
    created: int = 0
    owned_by: str = "agenthost"
    object: str = "model"


class ModelList(msgspec.Struct):
    data: list[ModelInfo]
    object: str = "list"


class ErrorDetail(msgspec.Struct):
    message: str
    type: str
    code: str
    param: str | None = None


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


_decode = msgspec.json.Decoder(ChatRequest).decode
_encode = msgspec.json.Encoder().encode

_ERROR_TYPES = {
    400: "invalid_request_error",
    404: "not_found_error",
    405: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_exceeded",
}


def _error(status: int, message: str, retry_after_s: float | None = None) -> Response:
    kind = _ERROR_TYPES.get(status, "server_error")
    headers: dict[str, str] = {}
    if retry_after_s is not None:
        # Both forms: the openai SDKs read the precise `retry-after-ms` first.
        headers["retry-after-ms"] = str(round(retry_after_s * 1000))
        headers["retry-after"] = str(math.ceil(retry_after_s))
    body = ErrorBody(ErrorDetail(message=message, type=kind, code=kind))
    return Response(_encode(body), status, media_type=JSON, headers=headers)


def _text_of(content: str | list[ContentPart] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(part.text or "" for part in content if part.type == "text")


class _StreamFrames:
    """The SSE frames of one streamed completion, from byte templates: a token costs one
    string encode, which keeps the simulator cheap at thousands of streams."""

    def __init__(self, completion_id: str, created: int, model: str) -> None:
        self.head = (
            b'data: {"id":'
            + _encode(completion_id)
            + b',"object":"chat.completion.chunk","created":'
            + str(created).encode()
            + b',"model":'
            + _encode(model)
        )
        self._delta_head = self.head + b',"choices":[{"index":0,"delta":'
        self._open = self._delta_head + b'{"content":'
        self._close = b'},"logprobs":null,"finish_reason":null}]}\n\n'

    def first(self) -> bytes:
        return self._delta_head + b'{"role":"assistant","content":""' + self._close

    def token(self, text: str) -> bytes:
        return self._open + _encode(text) + self._close

    def stop(self, reason: bytes = b"stop") -> bytes:
        return self._delta_head + b'{},"logprobs":null,"finish_reason":"' + reason + b'"}]}\n\n'

    def tool_call(self, call: SimToolCall) -> list[bytes]:
        """A call as OpenAI streams one: its id and name, then its arguments."""
        function = {"name": call.name, "arguments": ""}
        opening = {"index": 0, "id": call.id, "type": "function", "function": function}
        arguments = {"index": 0, "function": {"arguments": call.arguments}}
        return [
            self._delta_head
            + b'{"role":"assistant","content":null,"tool_calls":['
            + _encode(opening)
            + b"]"
            + self._close,
            self._delta_head + b'{"tool_calls":[' + _encode(arguments) + b"]" + self._close,
        ]

    def usage(self, usage: Usage) -> bytes:
        return self.head + b',"choices":[],"usage":' + _encode(usage) + b"}\n\n"


async def _stall(request: Request) -> None:
    """Hold the request until its client disconnects (or a long bound): a model that never
    answers, so the client's own timeout is what ends it."""
    try:
        async with asyncio.timeout(_STALL_S):
            while (await request.receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        return


def build_llm_sim_app(settings: SimSettings) -> Starlette:
    """The simulator as an ASGI app; one `SimulatedModel` serves all its requests."""
    sim = SimulatedModel(settings)
    ids = itertools.count(1)
    id_prefix = f"chatcmpl-sim{os.getpid():x}-"
    models_body = _encode(ModelList([ModelInfo(settings.model)]))

    async def completions(request: Request) -> Response:
        start = time.monotonic()
        try:
            req = _decode(await request.body())
        except msgspec.ValidationError as exc:
            return _error(422, f"invalid request: {exc}")
        except msgspec.DecodeError as exc:
            return _error(400, f"the body is not valid JSON: {exc}")
        if not req.messages:
            return _error(400, "messages must not be empty")
        messages = [{"role": m.role, "content": _text_of(m.content)} for m in req.messages]
        call = tool_call_for(messages, req.tools)
        try:
            text = sim.respond(messages, req.model)
        except LLMTimeout:
            await _stall(request)
            return _error(504, "the simulated model never answers")
        except LLMError as exc:
            return _error(exc.upstream_status or 500, exc.message, exc.upstream_retry_after)

        if call is not None:
            text = call.arguments
        tokens = split_tokens(text)
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        usage = Usage(prompt_tokens, len(tokens), prompt_tokens + len(tokens))
        completion_id = f"{id_prefix}{next(ids)}"
        created = int(time.time())
        if not req.stream:
            delay = sim.complete_delay_s(text) - (time.monotonic() - start)
            if delay > 0:
                await asyncio.sleep(delay)
            if call is not None:
                tool_call = ToolCallOut(call.id, FunctionOut(call.name, call.arguments))
                choice = Choice(0, MessageOut("assistant", None, [tool_call]), "tool_calls")
            else:
                choice = Choice(0, MessageOut("assistant", text), "stop")
            body = ChatCompletion(completion_id, created, req.model, [choice], usage)
            return Response(_encode(body), media_type=JSON)

        frames = _StreamFrames(completion_id, created, req.model)
        include_usage = req.stream_options is not None and req.stream_options.include_usage

        async def events() -> AsyncIterator[bytes]:
            if call is not None:
                async for _ in sim.pace("", start):  # a call arrives after the first token's time
                    pass
                for frame in frames.tool_call(call):
                    yield frame
                yield frames.stop(b"tool_calls")
                if include_usage:
                    yield frames.usage(usage)
                yield b"data: [DONE]\n\n"
                return
            yield frames.first()
            async for token in sim.pace(text, start):
                yield frames.token(token)
            yield frames.stop()
            if include_usage:
                yield frames.usage(usage)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    async def models(request: Request) -> Response:
        return Response(models_body, media_type=JSON)

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    async def stats(request: Request) -> Response:
        body = {"requests": sim.requests, "failures": sim.failures, "model": settings.model}
        return Response(_encode(body), media_type=JSON)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, exc.detail)

    async def internal_error(request: Request, exc: Exception) -> Response:
        return _error(500, f"internal error in the simulator: {type(exc).__name__}")

    handlers: dict[Any, Any] = {HTTPException: http_error, Exception: internal_error}
    return Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/stats", stats, methods=["GET"]),
        ],
        exception_handlers=handlers,
    )


def run_llm_sim(host: str, port: int, settings: SimSettings) -> None:
    """Serve the simulator on uvicorn (uvloop, httptools) until SIGINT/SIGTERM."""
    loop = "asyncio" if sys.platform == "win32" else "uvloop"
    print(
        f"agenthost llm-sim: http://{host}:{port}/v1 (model {settings.model})",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        build_llm_sim_app(settings),
        host=host,
        port=port,
        loop=loop,
        http="httptools",
        access_log=False,
        log_level="warning",
        # Streams still open at shutdown are cut after this, so a stop never hangs.
        timeout_graceful_shutdown=5,
    )
