"""The LLM client seam: what an agent's `turn.llm` offers, whatever model is behind it.

Backends: `sim://` (in-process simulated model, no network) and `http(s)://.../v1` (any
OpenAI-compatible server through the official `openai` SDK).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["ChatMessage", "LLMClient"]

ChatMessage = Mapping[str, str]
"""An OpenAI-style chat message: {"role": "system"|"user"|"assistant", "content": "..."}."""


@runtime_checkable
class LLMClient(Protocol):
    """An async chat-completions client."""

    model: str

    async def complete(self, messages: Sequence[ChatMessage], **options: Any) -> str:
        """The whole answer to `messages` (options: temperature, max_tokens, ...)."""
        ...

    def stream(self, messages: Sequence[ChatMessage], **options: Any) -> AsyncIterator[str]:
        """The answer as text chunks, as the model produces them."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
