"""LLM clients: `create_llm(url)` picks the simulator (`sim://`) or an OpenAI-compatible
server (`http(s)://.../v1`, through the official `openai` SDK)."""

from __future__ import annotations

from agenthost.llm.base import ChatMessage, LLMClient
from agenthost.llm.errors import LLMError, LLMRateLimited, LLMTimeout, LLMUpstreamError

__all__ = [
    "DEFAULT_MODEL",
    "ChatMessage",
    "LLMClient",
    "LLMError",
    "LLMRateLimited",
    "LLMTimeout",
    "LLMUpstreamError",
    "create_llm",
]

DEFAULT_MODEL = "agenthost-sim"
"""The model name sent when none is configured: what `agenthost llm-sim` serves."""


def create_llm(
    url: str, *, model: str | None = None, api_key: str | None = None, timeout: float = 60.0
) -> LLMClient:
    """The client for `url`; ValueError with the accepted forms otherwise."""
    if url.startswith("sim://"):
        from agenthost.llm.sim import SimLLM
        from agenthost.llm.simulated import settings_from_url

        return SimLLM(settings_from_url(url))
    if url.startswith(("http://", "https://")):
        from agenthost.llm.openai import OpenAILLM

        return OpenAILLM(url, model=model or DEFAULT_MODEL, api_key=api_key, timeout=timeout)
    raise ValueError(
        f"unknown LLM URL {url!r}: expected sim:// (e.g. sim://?latency_ms=2000) or an "
        "OpenAI-compatible base URL such as https://api.openai.com/v1"
    )
