"""`agenthost llm-sim`: an OpenAI-compatible chat-completions server backed by the simulated
model, for development, tests and load tests — streaming and not, with set latency, time to
first token, tokens per second and error rate, and answers derived from the prompt.

Deterministic fault injection by model name: `error-429` always answers 429 with
Retry-After, `error-500` always 500; `--error-rate` fails that share of requests with 503.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from agenthost.llm.simulated import SimSettings, SimulatedModel, answer_for, split_tokens

__all__ = ["build_llm_sim_app", "run_llm_sim"]


class ChatMessageIn(msgspec.Struct):
    role: str
    content: str | None = None


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class ChatRequest(msgspec.Struct):
    model: str
    messages: list[ChatMessageIn]
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    max_tokens: int | None = None


_decode = msgspec.json.Decoder(ChatRequest).decode
_encode = msgspec.json.encode


def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
    return Response(_encode(body), status, media_type="application/json", headers=headers)


def build_llm_sim_app(settings: SimSettings) -> Starlette:
    model = SimulatedModel(settings)
    ids = itertools.count(1)

    async def completions(request: Request) -> Response:
        try:
            req = _decode(await request.body())
        except msgspec.ValidationError as exc:
            return _error(422, str(exc), "invalid_request_error")
        except msgspec.DecodeError as exc:
            return _error(400, f"invalid JSON: {exc}", "invalid_request_error")
        if not req.messages:
            return _error(400, "messages must not be empty", "invalid_request_error")
        if req.model == "error-429":
            return _error(429, "rate limited (simulated)", "rate_limit_exceeded",
                          {"Retry-After": "0"})  # fmt: skip
        if req.model == "error-500":
            return _error(500, "upstream failure (simulated)", "server_error")
        if model.should_fail():
            return _error(503, "overloaded (simulated)", "server_error", {"Retry-After": "0"})
        messages = [{"role": m.role, "content": m.content or ""} for m in req.messages]
        text = answer_for(messages, settings.words, settings.seed)
        completion_id = f"chatcmpl-sim-{next(ids)}"
        created = int(time.time())
        prompt_tokens = sum(len((m.content or "").split()) for m in req.messages)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(split_tokens(text)),
                 "total_tokens": prompt_tokens + len(split_tokens(text))}  # fmt: skip
        if not req.stream:
            if settings.latency_ms:
                await asyncio.sleep(settings.latency_ms / 1000)
            body = {
                "id": completion_id, "object": "chat.completion", "created": created,
                "model": req.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop", "logprobs": None}],
                "usage": usage,
            }  # fmt: skip
            return Response(_encode(body), media_type="application/json")

        def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
            data = {
                "id": completion_id, "object": "chat.completion.chunk", "created": created,
                "model": req.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                             "logprobs": None}],
            }  # fmt: skip
            return b"data: " + _encode(data) + b"\n\n"

        async def events() -> AsyncIterator[bytes]:
            yield chunk({"role": "assistant", "content": ""}, None)
            async for token in model.stream(messages):
                yield chunk({"content": token}, None)
            yield chunk({}, "stop")
            if req.stream_options and req.stream_options.include_usage:
                tail = {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": req.model,
                    "choices": [],
                    "usage": usage,
                }
                yield b"data: " + _encode(tail) + b"\n\n"  # fmt: skip
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        body = {"object": "list", "data": [{"id": settings.model, "object": "model",
                                            "created": 0, "owned_by": "agenthost"}]}  # fmt: skip
        return Response(_encode(body), media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(routes=[
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ])  # fmt: skip


def run_llm_sim(host: str, port: int, settings: SimSettings) -> None:
    uvicorn.run(build_llm_sim_app(settings), host=host, port=port, loop="uvloop",
                http="httptools", access_log=False, log_level="warning")  # fmt: skip
