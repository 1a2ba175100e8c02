"""How a chat request leaves through the `openai` SDK: the one seam between `OpenAILLM` and
the SDK's request machinery, with two paths behind it.

- `LeanRequests` (chosen when the SDK has what it needs): the SDK's generic
  `AsyncOpenAI.post(path, content=..., cast_to=httpx2.Response)` -- the base URL, the key,
  the default headers, the timeout and the status errors are the SDK's -- with the body
  encoded by msgspec. `chat.completions.create` walks every message against the SDK's
  TypedDict annotations before encoding (`_transform`): about a third of the client's CPU per
  request with one message, and it grows with the window.
- `TypedRequests` (the fallback): `chat.completions.with_raw_response` /
  `with_streaming_response`, the SDK's own request building, its answer still read raw.

Both answer raw bytes (a completion's body, a stream's byte pieces); `OpenAILLM` decodes
them. `choose_requests` checks the SDK at construction: an `openai` outside the versions this
was written against, or a `post` without `content`, gets the fallback and one warning.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol, cast

import httpx2
import msgspec
import openai
from openai.types.chat import ChatCompletionMessageParam

from agenthost.llm.base import ChatMessage

__all__ = [
    "LEAN_OPENAI_VERSIONS",
    "ChatRequests",
    "LeanRequests",
    "TypedRequests",
    "choose_requests",
    "lean_requests_supported",
]

log = logging.getLogger("agenthost.llm")

LEAN_OPENAI_VERSIONS = ((3, 57), (4, 0))
"""`openai` versions [from, to) whose generic `post` the lean path was written against."""

# Options of `create` that are the SDK's request options, not fields of the JSON body.
_REQUEST_OPTIONS = frozenset({"extra_headers", "extra_query", "extra_body", "timeout"})
_JSON = {"Content-Type": "application/json"}


def _as_json(value: Any) -> Any:
    if isinstance(value, Mapping):  # a message given as another kind of mapping
        return dict(value)
    raise TypeError(f"cannot send {type(value).__name__} to the LLM as JSON")


_encode = msgspec.json.Encoder(enc_hook=_as_json).encode


class ChatRequests(Protocol):
    """Sends chat-completion requests through the SDK and hands back the raw answer."""

    name: str

    async def complete(
        self, model: str, messages: Sequence[ChatMessage], options: Mapping[str, Any]
    ) -> bytes:
        """The body of a non-streamed answer (a status error raises the SDK's error)."""
        ...

    def stream(
        self, model: str, messages: Sequence[ChatMessage], options: Mapping[str, Any]
    ) -> contextlib.AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """The byte pieces of a streamed answer; leaving the context closes the response."""
        ...


def lean_requests_supported(client: openai.AsyncOpenAI) -> str | None:
    """None when the lean path can run on this SDK, else why not."""
    try:
        version = tuple(int(p) for p in openai.__version__.split(".")[:2])
    except ValueError:
        return f"openai {openai.__version__} has an unreadable version"
    low, high = LEAN_OPENAI_VERSIONS
    if not low <= version < high:
        return f"openai {openai.__version__} is outside {low[0]}.{low[1]} to below {high[0]}"
    try:
        parameters = inspect.signature(client.post).parameters
    except (TypeError, ValueError, AttributeError):
        return "AsyncOpenAI.post cannot be inspected"
    if "content" not in parameters or "stream" not in parameters:
        return "AsyncOpenAI.post takes no raw content"
    return None


def choose_requests(client: openai.AsyncOpenAI, *, lean: bool = True) -> ChatRequests:
    """The lean path when asked for and supported, else the SDK's typed requests."""
    if lean:
        problem = lean_requests_supported(client)
        if problem is None:
            return LeanRequests(client)
        log.warning("LLM requests go through chat.completions.create: %s", problem)
    return TypedRequests(client)


class LeanRequests:
    """Requests through the SDK's generic `post`, the body encoded by msgspec."""

    name = "lean"

    def __init__(self, client: openai.AsyncOpenAI) -> None:
        self.client = client

    def _request(
        self, model: str, messages: Sequence[ChatMessage], options: Mapping[str, Any], stream: bool
    ) -> tuple[bytes, dict[str, Any]]:
        body: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
        headers: dict[str, str] = dict(_JSON)
        request: dict[str, Any] = {"headers": headers}
        for key, value in options.items():
            if key not in _REQUEST_OPTIONS:
                body[key] = value
            elif key == "extra_headers" and value:
                headers.update(value)
            elif key == "extra_query" and value:
                request["params"] = dict(value)
            elif key == "extra_body" and value:
                body.update(value)
            elif key == "timeout" and value is not None:
                request["timeout"] = value
        return _encode(body), request

    async def complete(
        self, model: str, messages: Sequence[ChatMessage], options: Mapping[str, Any]
    ) -> bytes:
        content, request = self._request(model, messages, options, False)
        response = await self.client.post(
            "/chat/completions",
            cast_to=httpx2.Response,
            content=content,
            options=cast("Any", request),
        )
        return response.content

    @contextlib.asynccontextmanager
    async def stream(
        self, model: str, messages: Sequence[ChatMessage], options: Mapping[str, Any]
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        content, request = self._request(model, messages, options, True)
        response = await self.client.post(
            "/chat/completions",
            cast_to=httpx2.Response,
            content=content,
            options=cast("Any", request),
            stream=True,
            stream_cls=None,
        )
        try:
            yield response.aiter_bytes()
        finally:
            await response.aclose()


def _params(messages: Sequence[ChatMessage]) -> list[ChatCompletionMessageParam]:
    return [cast("ChatCompletionMessageParam", dict(m)) for m in messages]


class TypedRequests:
    """Requests through `chat.completions.create`, the answer read raw."""

    name = "typed"

    def __init__(self, client: openai.AsyncOpenAI) -> None:
        self.client = client

    async def complete(
        self, model: str, messages: Sequence[ChatMessage], options: Mapping[str, Any]
    ) -> bytes:
        raw = await self.client.chat.completions.with_raw_response.create(
            model=model, messages=_params(messages), stream=False, **options
        )
        body: bytes = raw.content
        return body

    @contextlib.asynccontextmanager
    async def stream(
        self, model: str, messages: Sequence[ChatMessage], options: Mapping[str, Any]
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        async with self.client.chat.completions.with_streaming_response.create(
            model=model, messages=_params(messages), stream=True, **options
        ) as response:
            yield response.iter_bytes()
