"""`sim://`: the simulated model in this process — no network, deterministic answers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from agenthost.llm.base import ChatMessage
from agenthost.llm.errors import LLMUpstreamError
from agenthost.llm.simulated import SimSettings, SimulatedError, SimulatedModel, answer_for

__all__ = ["SimLLM"]


class SimLLM:
    """An `LLMClient` over `SimulatedModel`; with zero latency `complete` never suspends."""

    def __init__(self, settings: SimSettings | None = None) -> None:
        self.settings = settings or SimSettings()
        self.model = self.settings.model
        self._model = SimulatedModel(self.settings)
        s = self.settings
        self._instant = s.latency_ms == 0 and s.error_rate == 0

    async def complete(self, messages: Sequence[ChatMessage], **options: Any) -> str:
        if self._instant:  # the benchmarked hot path: no sleep, no task
            return answer_for(messages, self.settings.words, self.settings.seed)
        try:
            return await self._model.complete(messages)
        except SimulatedError as exc:
            raise LLMUpstreamError(str(exc)) from None

    async def stream(self, messages: Sequence[ChatMessage], **options: Any) -> AsyncIterator[str]:
        try:
            async for token in self._model.stream(messages):
                yield token
        except SimulatedError as exc:
            raise LLMUpstreamError(str(exc)) from None

    async def close(self) -> None:
        return None
