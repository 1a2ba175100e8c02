"""Errors of LLM calls, each with a stable code; the engine records the code on the turn."""

from __future__ import annotations

from agenthost.errors import AgentError

__all__ = ["LLMError", "LLMRateLimited", "LLMTimeout", "LLMUpstreamError"]


class LLMError(AgentError):
    """The LLM call failed after its retries."""

    code = "llm_error"


class LLMRateLimited(LLMError):
    """The LLM kept answering 429."""

    code = "llm_rate_limited"


class LLMUpstreamError(LLMError):
    """The LLM kept answering 5xx or could not be reached."""

    code = "llm_unavailable"


class LLMTimeout(LLMError):
    """The LLM did not answer in time."""

    code = "llm_timeout"
