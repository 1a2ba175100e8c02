"""Errors of LLM calls, one class per way a model can fail, each with a stable `code`.

Every LLM client raises only these (after its retries), so the turn engine records the same
code whatever model is behind `turn.llm`; `upstream_status` keeps the model server's status.
"""

from __future__ import annotations

from agenthost.core.errors import AgentError

__all__ = ["LLMError", "LLMRateLimited", "LLMRejected", "LLMTimeout", "LLMUpstreamError"]


class LLMError(AgentError):
    """An LLM call failed. A client of agenthost sees 502 (the agent's model failed) with
    `code`; `upstream_status` is the HTTP status the model server answered, if it answered."""

    code = "llm_error"
    retryable = False
    """Whether the same request may succeed later (clients retry only these)."""

    def __init__(
        self,
        message: str | None = None,
        *,
        upstream_status: int | None = None,
        upstream_retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status
        # Deliberately not `retry_after`: that one becomes our own response's Retry-After,
        # and a model's rate limit is not a promise about when this server takes a turn.
        self.upstream_retry_after = upstream_retry_after


class LLMRateLimited(LLMError):
    """The model server answered 429 (after the client's retries, if any)."""

    code = "llm_rate_limited"
    retryable = True


class LLMUpstreamError(LLMError):
    """The model server answered 5xx, or could not be reached, or broke off a stream."""

    code = "llm_unavailable"
    retryable = True


class LLMTimeout(LLMError):
    """The model server did not answer within the client's timeout."""

    code = "llm_timeout"
    retryable = True


class LLMRejected(LLMError):
    """The model server refused the request itself (400, 401, 403, 404, 422 ...): a wrong
    model name, key or parameter. Retrying the same request cannot help."""

    code = "llm_rejected"
