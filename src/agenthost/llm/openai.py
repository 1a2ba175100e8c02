"""Any OpenAI-compatible server through the official `openai` SDK (`AsyncOpenAI`).

Retries are ours, not the SDK's (it runs with `max_retries=0`): 429, 5xx, unreachable servers
and timeouts are retried with jittered exponential backoff that waits at least what the
server's `Retry-After` asks, at most `RetryPolicy.max_retries` times. A stream is retried only
before its first text chunk: after that a retry would repeat text the caller already has.
What still fails is raised as an `LLMError` subclass with a clear code.

The SDK's HTTP transport is chosen by `transport`: `aiohttp` (the SDK's `DefaultAioHttpClient`)
or `httpx` (its default); `benchmarks/llm_transport.py` measures what each costs per request.

The SDK builds and sends every request (base URL, key, headers, options, status errors), but
its answer is read raw, through its public `with_raw_response` / `with_streaming_response`:
building a pydantic model for every streamed chunk cost about 0.1 ms of CPU each (6 ms for a
50-token stream). Answers and chunks are decoded with msgspec into the few fields agenthost
reads; an agent that wants the SDK's typed objects calls the SDK itself (`OpenAILLM.sdk`).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal, get_args

import aiohttp
import httpx2
import msgspec
import openai

from agenthost.llm.base import ChatMessage
from agenthost.llm.errors import (
    LLMError,
    LLMRateLimited,
    LLMRejected,
    LLMTimeout,
    LLMUpstreamError,
)
from agenthost.llm.openai_requests import choose_requests
from agenthost.observability.tracing import with_trace_headers

__all__ = [
    "DEFAULT_LLM_TRANSPORT",
    "LLM_TRANSPORTS",
    "LLMTransport",
    "OpenAILLM",
    "RetryPolicy",
    "map_openai_error",
    "retry_after_s",
    "sse_data",
]

LLMTransport = Literal["aiohttp", "httpx"]
LLM_TRANSPORTS: tuple[LLMTransport, ...] = get_args(LLMTransport)
DEFAULT_LLM_TRANSPORT: LLMTransport = "aiohttp"
"""The transport that measured cheaper in client CPU per request (docs/benchmarks.md)."""


class RetryPolicy(msgspec.Struct, kw_only=True, frozen=True):
    """How an `OpenAILLM` retries a failed call; times in seconds.

    The n-th retry waits a random time between half and all of
    `min(max_backoff_s, initial_backoff_s * 2**n)`, or the server's Retry-After if that is
    longer. A Retry-After above `max_retry_after_s` is not waited for: the call fails at once.
    """

    max_retries: int = 3
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    max_retry_after_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if min(self.initial_backoff_s, self.max_backoff_s, self.max_retry_after_s) < 0:
            raise ValueError("backoff times must be >= 0")

    def backoff_s(self, retry: int, retry_after_s: float | None = None) -> float:
        """The wait before retry number `retry` (0-based)."""
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * 2.0 ** min(retry, 32))
        # Jitter spreads the retries of many sessions hit by the same outage.
        delay = ceiling * (0.5 + random.random() / 2)
        return max(delay, retry_after_s or 0.0)


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """The wait a response asks for: `retry-after-ms`, or `retry-after` in seconds or as an
    HTTP date; None when absent or unreadable."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except ValueError:
            if scale == 1000.0:
                continue
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            seconds = when.timestamp() - time.time()
        if seconds == seconds and seconds != float("inf"):  # not NaN, not inf
            return max(0.0, seconds)
    return None


def map_openai_error(exc: openai.OpenAIError) -> LLMError:
    """The `LLMError` for an SDK error, with the SDK error as its cause."""
    error: LLMError
    refused = _connection_failure(exc)
    if refused is not None:
        error = LLMUpstreamError(f"cannot reach the LLM: {refused}")
    elif isinstance(exc, openai.APITimeoutError):
        error = LLMTimeout("the LLM did not answer in time")
    elif isinstance(exc, openai.APIConnectionError):
        error = LLMUpstreamError(f"cannot reach the LLM: {exc.message}")
    elif isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retry_after = retry_after_s(exc.response.headers)
        text = f"the LLM answered {status}: {exc.message}"
        if status == 429:
            error = LLMRateLimited(text, upstream_status=status, upstream_retry_after=retry_after)
        elif status >= 500 or status == 408:
            error = LLMUpstreamError(text, upstream_status=status, upstream_retry_after=retry_after)
        else:
            error = LLMRejected(text, upstream_status=status)
    elif isinstance(exc, openai.APIError):
        # An error event inside a stream, or a body the SDK could not read.
        error = LLMUpstreamError(f"the LLM failed: {exc.message}")
    else:
        error = LLMError(f"the LLM call failed: {exc}")
    error.__cause__ = exc
    return error


def _connection_failure(exc: openai.OpenAIError) -> aiohttp.ClientError | None:
    """The aiohttp error behind an SDK timeout that was no timeout, else None.

    The SDK's aiohttp adapter turns every aiohttp connection error (refused, reset, closed
    by the server) into a connect *timeout*; the root cause tells them apart.
    """
    if not isinstance(exc, openai.APITimeoutError):
        return None
    cause: BaseException | None = exc.__cause__
    while cause is not None and not isinstance(cause, aiohttp.ClientError):
        cause = cause.__cause__
    if cause is None or isinstance(cause, TimeoutError):
        return None
    return cause


def http_client_for(transport: LLMTransport) -> httpx2.AsyncClient | None:
    """The `http_client` AsyncOpenAI gets for `transport` (None: the SDK's own httpx client)."""
    if transport == "aiohttp":
        return openai.DefaultAioHttpClient()
    if transport == "httpx":
        return None
    raise ValueError(f"unknown LLM transport {transport!r}: expected one of {LLM_TRANSPORTS}")


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message = msgspec.field(default_factory=_Message)


class _Completion(msgspec.Struct):
    """The fields of a chat completion agenthost reads (others are skipped undecoded)."""

    choices: list[_Choice] = msgspec.field(default_factory=list)


class _Delta(msgspec.Struct):
    content: str | None = None


class _ChunkChoice(msgspec.Struct):
    delta: _Delta = msgspec.field(default_factory=_Delta)


class _Chunk(msgspec.Struct):
    """The fields of a streamed chunk agenthost reads; `error` is an error event's body."""

    choices: list[_ChunkChoice] = msgspec.field(default_factory=list)
    error: Any = None


_decode_completion = msgspec.json.Decoder(_Completion).decode
_decode_chunk = msgspec.json.Decoder(_Chunk).decode
_DONE = b"[DONE]"


async def sse_data(pieces: AsyncIterator[bytes]) -> AsyncIterator[tuple[bytes, bytes]]:
    """`(event, data)` of each server-sent event in a byte stream (data lines joined with a
    newline, the event name b"" when none was given); comments and other fields skipped."""
    rest = b""
    event = b""
    data: list[bytes] = []
    async for piece in pieces:
        lines = (rest + piece).split(b"\n")
        rest = lines.pop()
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if data:
                    yield event, b"\n".join(data)
                event, data = b"", []
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
            elif line.startswith(b"event:"):
                event = line[6:].strip()
    if rest.startswith(b"data:"):  # a last line with no line break after it
        value = rest[5:].rstrip(b"\r")
        data.append(value[1:] if value.startswith(b" ") else value)
    if data:
        yield event, b"\n".join(data)


def _broken_stream(exc: httpx2.TransportError) -> LLMUpstreamError:
    error = LLMUpstreamError(f"the LLM's stream broke: {exc}")
    error.__cause__ = exc
    return error


def _stream_error(body: Any) -> LLMUpstreamError:
    message = body.get("message") if isinstance(body, dict) else None
    return LLMUpstreamError(f"the LLM failed: {message or body}")


class OpenAILLM:
    """An `LLMClient` for an OpenAI-compatible `base_url` (e.g. `https://api.openai.com/v1`).

    `timeout` bounds each attempt; `options` of `complete`/`stream` (temperature, max_tokens,
    ...) go to `chat.completions.create` as they are. `retries` counts retries made so far.
    `transport` is the SDK's HTTP transport, `aiohttp` or `httpx`; `close()` releases its
    connections.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        transport: LLMTransport = DEFAULT_LLM_TRANSPORT,
        lean: bool = True,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self.transport = transport
        self.retry = retry or RetryPolicy()
        self.retries = 0
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            # A local server needs no key, but the SDK refuses to start without one.
            api_key=api_key or "unused",
            timeout=timeout,
            max_retries=0,
            http_client=http_client_for(transport),
        )
        # lean=False: the SDK's own request building (agenthost.llm.openai_requests).
        self.requests = choose_requests(self._client, lean=lean)

    async def _wait_or_raise(self, exc: openai.OpenAIError | LLMError, attempt: int) -> None:
        """Sleep before the next attempt, or raise the mapped error if none is due."""
        error = exc if isinstance(exc, LLMError) else map_openai_error(exc)
        policy = self.retry
        retry_after = error.upstream_retry_after
        if (
            not error.retryable
            or attempt >= policy.max_retries
            or (retry_after is not None and retry_after > policy.max_retry_after_s)
        ):
            if attempt:
                error.args = (f"{error.message} (after {attempt} retries)",)
            raise error
        self.retries += 1
        await asyncio.sleep(policy.backoff_s(attempt, retry_after))

    async def complete(self, messages: Sequence[ChatMessage], **options: Any) -> str:
        options = with_trace_headers(options)  # traceparent, when tracing is on
        attempt = 0
        while True:
            try:
                body = await self.requests.complete(self.model, messages, options)
                break
            except openai.OpenAIError as exc:
                await self._wait_or_raise(exc, attempt)
                attempt += 1
        try:
            response = _decode_completion(body)
        except msgspec.DecodeError:
            raise LLMUpstreamError("the LLM answered with no completion") from None
        if not response.choices:
            raise LLMUpstreamError("the LLM answered with no choices")
        return response.choices[0].message.content or ""

    async def stream(self, messages: Sequence[ChatMessage], **options: Any) -> AsyncIterator[str]:
        options = with_trace_headers(options)  # traceparent, when tracing is on
        attempt = 0
        while True:
            started = False
            try:
                # The context closes the HTTP response even when the caller stops early.
                async with self.requests.stream(self.model, messages, options) as pieces:
                    async for event, data in sse_data(pieces):
                        if data == _DONE:
                            return
                        try:
                            chunk = _decode_chunk(data)
                        except msgspec.DecodeError:
                            raise LLMUpstreamError("the LLM sent a bad chunk") from None
                        if chunk.error is not None or event == b"error":
                            raise _stream_error(chunk.error)
                        if chunk.choices:
                            text = chunk.choices[0].delta.content
                            if text:
                                started = True
                                yield text
                return
            except (openai.OpenAIError, httpx2.TransportError) as exc:
                # Read raw, a broken stream raises the transport's error, not the SDK's.
                error = (
                    map_openai_error(exc)
                    if isinstance(exc, openai.OpenAIError)
                    else _broken_stream(exc)
                )
                if started:
                    raise error from exc
                await self._wait_or_raise(error, attempt)
                attempt += 1

    @property
    def sdk(self) -> openai.AsyncOpenAI:
        """The SDK client this one sends through (base URL, key, transport), for an agent that
        wants the SDK's typed objects: `await turn.llm.sdk.chat.completions.create(...)`.
        Its calls are the SDK's own: not retried by agenthost, not in its LLM metrics."""
        return self._client

    async def close(self) -> None:
        """Close the HTTP client and its connections (aiohttp's session too)."""
        await self._client.close()

    @property
    def closed(self) -> bool:
        return self._client.is_closed()

    def __repr__(self) -> str:
        return f"OpenAILLM({self.base_url!r}, model={self.model!r}, transport={self.transport!r})"
