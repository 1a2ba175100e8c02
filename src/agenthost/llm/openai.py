"""Any OpenAI-compatible server through the official `openai` SDK (AsyncOpenAI).

Retries of 429, 5xx, connection errors and timeouts are the SDK's own: exponential backoff
with jitter that honours `Retry-After`, bounded by `max_retries`. What still fails is raised
as an `LLMError` with a clear code, which ends the turn as failed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import openai
from openai.types.chat import ChatCompletionMessageParam

from agenthost.llm.base import ChatMessage
from agenthost.llm.errors import LLMError, LLMRateLimited, LLMTimeout, LLMUpstreamError

__all__ = ["OpenAILLM"]


@contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except openai.RateLimitError as exc:
        raise LLMRateLimited(f"the LLM kept rate-limiting: {exc.message}") from exc
    except openai.APITimeoutError as exc:
        raise LLMTimeout("the LLM did not answer in time") from exc
    except openai.APIConnectionError as exc:
        raise LLMUpstreamError(f"cannot reach the LLM: {exc}") from exc
    except openai.APIStatusError as exc:
        if exc.status_code >= 500:
            raise LLMUpstreamError(f"the LLM failed ({exc.status_code}): {exc.message}") from exc
        raise LLMError(f"the LLM refused the request ({exc.status_code}): {exc.message}") from exc


def _params(messages: Sequence[ChatMessage]) -> list[ChatCompletionMessageParam]:
    return [cast("ChatCompletionMessageParam", dict(m)) for m in messages]


class OpenAILLM:
    """An `LLMClient` for `base_url` (e.g. `https://api.openai.com/v1`)."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "not-needed",
            timeout=timeout,
            max_retries=max_retries,
        )

    async def complete(self, messages: Sequence[ChatMessage], **options: Any) -> str:
        with _mapped_errors():
            response = await self._client.chat.completions.create(
                model=self.model, messages=_params(messages), stream=False, **options
            )
        if not response.choices:
            raise LLMError("the LLM answered with no choices")
        return response.choices[0].message.content or ""

    async def stream(self, messages: Sequence[ChatMessage], **options: Any) -> AsyncIterator[str]:
        with _mapped_errors():
            chunks = await self._client.chat.completions.create(
                model=self.model,
                messages=_params(messages),
                stream=True,
                **options,
            )
            async for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content

    async def close(self) -> None:
        await self._client.close()
