"""`sim://`: the simulated model inside this process — no network, deterministic answers.

With zero latency, `complete` returns without suspending: no sleep, no task, no timer, so the
simulator adds next to nothing to the CPU a benchmark measures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from agenthost.llm.base import ChatMessage
from agenthost.llm.sim_model import (
    SimSettings,
    SimulatedModel,
    answerer_for,
    parse_fault,
    settings_from_url,
)

__all__ = ["SimLLM"]


class SimLLM:
    """An `LLMClient` over `SimulatedModel`. Options such as `temperature` are accepted and
    ignored: the answer depends only on the messages and the seed."""

    def __init__(self, settings: SimSettings | None = None) -> None:
        self.settings = settings or SimSettings()
        self.model = self.settings.model
        self._sim = SimulatedModel(self.settings)
        s = self.settings
        self._answerer = answerer_for(s.words, s.seed)
        # Decided once, so the common case costs one hash and one join per call.
        self._plain = self._sim.instant and s.error_rate == 0 and parse_fault(s.model) is None

    @classmethod
    def from_url(cls, url: str) -> SimLLM:
        """`SimLLM.from_url("sim://?latency_ms=2000&tokens_per_s=50")`."""
        return cls(settings_from_url(url))

    async def complete(self, messages: Sequence[ChatMessage], **options: Any) -> str:
        if self._plain:
            return self._answerer.answer(messages)
        return await self._sim.complete(messages)

    def stream(self, messages: Sequence[ChatMessage], **options: Any) -> AsyncIterator[str]:
        return self._sim.stream(messages)

    async def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"SimLLM({self.settings!r})"
