"""Every error the client raises, in one hierarchy, each documented by when it is raised.

`RetryableFailure` is internal: the retry loop catches it and tries again (same
Idempotency-Key), so a caller only ever sees it as the cause of `RetriesExhausted`.
"""

from __future__ import annotations

__all__ = [
    "APIError",
    "AgentHostClientError",
    "NotFound",
    "RetriesExhausted",
    "RetryableFailure",
    "StreamProtocolError",
    "TurnFailed",
]


class AgentHostClientError(Exception):
    """Base of every error raised by `agenthost.client`."""


class APIError(AgentHostClientError):
    """The server answered with an error it is no use retrying (400, 401, 404, 409, 413,
    422, ...): its `{"error": {"code", "message"}}` body, with the HTTP status."""

    def __init__(
        self, status: int, code: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class NotFound(APIError):
    """404: no such session or turn."""


class TurnFailed(AgentHostClientError):
    """The turn itself ended in an error: the agent raised (`agent_error`), it ran too
    long, it was interrupted by a newer turn, ... Retrying it is the caller's decision."""

    def __init__(self, turn_id: str | None, code: str, message: str) -> None:
        super().__init__(f"turn {turn_id} failed: {code}: {message}")
        self.turn_id = turn_id
        self.code = code
        self.message = message


class StreamProtocolError(AgentHostClientError):
    """The server sent an event or frame that does not follow the contract."""


class RetriesExhausted(AgentHostClientError):
    """Every attempt failed with a retryable problem (no server reachable, 503s, dropped
    streams) until the retry policy's attempts or time ran out; `__cause__` is the last."""

    def __init__(self, attempts: int, last: RetryableFailure) -> None:
        super().__init__(f"gave up after {attempts} attempts: {last}")
        self.attempts = attempts
        self.last = last


class RetryableFailure(AgentHostClientError):
    """One attempt failed in a way a retry with the same Idempotency-Key may fix.

    `failover`: try the next base URL (the process is unreachable, draining or gone);
    `retry_after`: the server's Retry-After in seconds, if it sent one.
    """

    def __init__(self, reason: str, *, failover: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.failover = failover
        self.retry_after = retry_after
