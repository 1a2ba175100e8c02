"""`InstrumentedLLM`: the agent's `turn.llm` with every call timed
(`agenthost_llm_request_duration_seconds`, and for streams
`agenthost_llm_time_to_first_token_seconds`), failures counted by code
(`agenthost_llm_errors_total`) and, when tracing is on, an `llm.chat` span that is current
while the model is asked, so an OpenAI-compatible request carries its `traceparent`.

It wraps whatever client the server built (a response cache included), so the latency is the
one the agent sees; the cache's hit and miss counters are read through `cache_counts`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any

from agenthost.llm.base import ChatMessage, LLMClient
from agenthost.llm.errors import LLMError
from agenthost.observability.metrics import Metrics

if TYPE_CHECKING:
    from agenthost.observability.tracing import Tracing

__all__ = ["InstrumentedLLM"]


class InstrumentedLLM:
    """An `LLMClient` that measures `inner`; other attributes of `inner` read through."""

    def __init__(self, inner: LLMClient, metrics: Metrics, tracing: Tracing | None = None):
        self.inner = inner
        self.model = inner.model
        self._metrics = metrics
        self._duration = metrics.llm_duration
        self._first_token = metrics.llm_first_token
        self._tracing = tracing

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def cache_counts(self) -> tuple[int, int]:
        """(hits, misses) of the response cache in front of the model; (0, 0) without one."""
        return cache_counts(self.inner)

    async def complete(self, messages: Sequence[ChatMessage], **options: Any) -> str:
        span = None
        if self._tracing is not None:
            span = self._tracing.start_llm(self.model, stream=False)
            span.attach()
        started = perf_counter()
        try:
            return await self.inner.complete(messages, **options)
        except BaseException as exc:
            if isinstance(exc, LLMError):
                self._metrics.llm_failed(exc.code)
            if span is not None:
                span.fail(exc)
            raise
        finally:
            self._duration.observe(perf_counter() - started)
            if span is not None:
                span.end()

    async def stream(self, messages: Sequence[ChatMessage], **options: Any) -> AsyncIterator[str]:
        span = None
        if self._tracing is not None:
            span = self._tracing.start_llm(self.model, stream=True)
        started = perf_counter()
        chunks = self.inner.stream(messages, **options).__aiter__()
        first = True
        try:
            if span is None:
                # Untraced: the first chunk is timed, the rest pass through a bare loop (this
                # runs for every token of every stream).
                async for chunk in chunks:
                    self._first_token.observe(perf_counter() - started)
                    yield chunk
                    break
                async for chunk in chunks:
                    yield chunk
                return
            while True:
                # The span is current only while the model is asked: between chunks the
                # agent's own code runs under the turn's span, not the LLM call's.
                if span is not None:
                    span.attach()
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    return
                finally:
                    if span is not None:
                        span.detach()
                if first:
                    first = False
                    self._first_token.observe(perf_counter() - started)
                yield chunk
        except GeneratorExit:  # the caller stopped reading: not a failure
            raise
        except BaseException as exc:
            if isinstance(exc, LLMError):
                self._metrics.llm_failed(exc.code)
            if span is not None:
                span.fail(exc)
            raise
        finally:
            self._duration.observe(perf_counter() - started)
            if span is not None:
                span.end()
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def close(self) -> None:
        await self.inner.close()

    def __repr__(self) -> str:
        return f"InstrumentedLLM({self.inner!r})"


def cache_counts(llm: LLMClient) -> tuple[int, int]:
    """(hits, misses) of `llm` if it is a response cache; (0, 0) for any other client."""
    hits = getattr(llm, "hits", 0)
    misses = getattr(llm, "misses", 0)
    if isinstance(hits, int) and isinstance(misses, int):
        return hits, misses
    return 0, 0
