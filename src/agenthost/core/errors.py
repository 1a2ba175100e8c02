"""Every error agenthost raises on purpose, each with the HTTP status and code a client sees.

Handlers never build error bodies themselves: they raise one of these, and the web layer turns
it into `{"error": {"code", "message"}}` with `status`, plus `Retry-After` where one is set.
"""

from __future__ import annotations

__all__ = [
    "AgentError",
    "AgentHostError",
    "BadFrame",
    "BadRequest",
    "BinaryFrame",
    "ConcurrencyLimited",
    "Draining",
    "EventBeyondEnd",
    "FrameRateExceeded",
    "FrameTooLarge",
    "IdempotencyKeyReused",
    "InvalidJSON",
    "InvalidSessionId",
    "JSONTooDeep",
    "LeaseLost",
    "MessageTooLong",
    "MetadataTooDeep",
    "MetadataTooLarge",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "QueueFull",
    "RateLimited",
    "SessionBusy",
    "SessionExists",
    "SessionNotFound",
    "StoreUnavailable",
    "TurnIdRequired",
    "TurnInterrupted",
    "TurnNotFound",
    "Unauthorized",
    "Unavailable",
    "UpgradeRequired",
    "ValidationFailed",
    "error_for",
]


class AgentHostError(Exception):
    """Base of every error with a defined status and code; `retry_after` in seconds, if any."""

    status: int = 500
    code: str = "internal_error"
    retry_after: float | None = None
    headers: dict[str, str] | None = None  # extra response headers (WWW-Authenticate, ...)

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        if retry_after is not None:
            self.retry_after = retry_after

    @property
    def message(self) -> str:
        return str(self)


class BadRequest(AgentHostError):
    """The request is not usable as sent."""

    status = 400
    code = "bad_request"


class InvalidJSON(BadRequest):
    """The request body is not valid JSON."""

    code = "invalid_json"


class InvalidSessionId(BadRequest):
    """A session id must match [A-Za-z0-9._:-]{1,128}."""

    code = "invalid_session_id"


class JSONTooDeep(BadRequest):
    """The JSON nests deeper than the decoder follows (about a thousand levels)."""

    code = "json_too_deep"


class BadFrame(BadRequest):
    """A WebSocket frame is not a JSON client frame (`turn` or `resume`) of the right shape."""

    code = "bad_frame"


class TurnIdRequired(BadRequest):
    """A resume (`Last-Event-ID`, or a frame's `after`) without the id of the turn to resume:
    send it as `Idempotency-Key` (or the frame's `turn_id`)."""

    code = "turn_id_required"


class Unauthorized(AgentHostError):
    """Missing or wrong credentials."""

    status = 401
    code = "unauthorized"
    headers = {"WWW-Authenticate": 'Bearer realm="agenthost"'}


class RateLimited(AgentHostError):
    """The tenant's turn rate (turns per minute) is used up for now."""

    status = 429
    code = "rate_limited"


class ConcurrencyLimited(RateLimited):
    """The tenant already runs as many turns at once as it may."""

    code = "concurrency_limited"


class QueueFull(RateLimited):
    """The tenant has as many turns queued for workers as it may; retry when some ran."""

    code = "queue_full"
    retry_after = 1.0


class NotFound(AgentHostError):
    """No such resource."""

    status = 404
    code = "not_found"


class SessionNotFound(NotFound):
    """No such session (or it expired)."""

    code = "session_not_found"


class TurnNotFound(NotFound):
    """No such turn in this session."""

    code = "turn_not_found"


class SessionExists(AgentHostError):
    """A session with this id already exists."""

    status = 409
    code = "session_exists"


class SessionBusy(AgentHostError):
    """Another turn of this session is running; raised under `on_busy=reject`, or when an
    `enqueue` wait reaches its bound."""

    status = 409
    code = "session_busy"
    retry_after = 1.0


class PayloadTooLarge(AgentHostError):
    """The request body is larger than the configured limit."""

    status = 413
    code = "payload_too_large"


class MessageTooLong(PayloadTooLarge):
    """The message is longer than the configured limit (--max-message-chars)."""

    code = "message_too_long"


class MetadataTooLarge(PayloadTooLarge):
    """The metadata, encoded as JSON, is larger than the limit (--max-metadata-bytes)."""

    code = "metadata_too_large"


class FrameTooLarge(PayloadTooLarge):
    """A WebSocket frame is larger than the limit (--ws-max-frame-bytes); the connection is
    closed with 1009."""

    code = "frame_too_large"


class UpgradeRequired(AgentHostError):
    """A plain HTTP request to a WebSocket route: it needs a WebSocket handshake."""

    status = 426
    code = "upgrade_required"


class ValidationFailed(AgentHostError):
    """The JSON is well formed but a field is missing, of the wrong type or out of range."""

    status = 422
    code = "validation_error"


class IdempotencyKeyReused(ValidationFailed):
    """An `Idempotency-Key` (turn id) sent again with a different request (message or
    metadata) than the turn it names: the IETF idempotency-key draft's 422."""

    code = "idempotency_key_reused"


class EventBeyondEnd(ValidationFailed):
    """A resume after an event number the turn's finished stream never reached."""

    code = "event_beyond_end"


class MetadataTooDeep(ValidationFailed):
    """The metadata nests deeper than the limit (--max-metadata-depth)."""

    code = "metadata_too_deep"


class BinaryFrame(AgentHostError):
    """A binary WebSocket frame: client frames are JSON text; the connection is closed with
    1003."""

    status = 415
    code = "binary_frame"


class FrameRateExceeded(AgentHostError):
    """A WebSocket client sent frames faster than the limit (--ws-max-frames-per-s); the
    connection is closed with 1008."""

    status = 429
    code = "frame_rate_exceeded"


class AgentError(AgentHostError):
    """The agent (or the LLM it called) raised; the turn is recorded as failed."""

    status = 502
    code = "agent_error"


class TurnInterrupted(AgentHostError):
    """The turn was cancelled (interrupt, drain or a lost lease); its user message is kept
    in the turn record and a retry with the same turn id runs it again."""

    status = 409
    code = "interrupted"


class Unavailable(AgentHostError):
    """The server cannot take this request now; retry later, possibly on another process."""

    status = 503
    code = "unavailable"
    retry_after = 1.0


class StoreUnavailable(Unavailable):
    """The session store cannot be reached; nothing was half-written."""

    code = "store_unavailable"


class Draining(Unavailable):
    """This process is draining and takes no new work."""

    code = "draining"


class Overloaded(Unavailable):
    """This process is at its in-flight turn limit."""

    code = "overloaded"


class LeaseLost(Unavailable):
    """This process no longer holds the session's lease (it expired, or a newer owner took
    it), so its commit was refused. A retry with the same turn id completes the turn."""

    code = "lease_lost"


def error_for(code: str, message: str) -> AgentHostError:
    """The error of `code` (the most specific class that has it), carrying `message`: an
    error that crossed a process boundary (a queued turn's `error` event) raised again."""
    found: type[AgentHostError] = AgentHostError
    pending: list[type[AgentHostError]] = [AgentHostError]
    while pending:
        kind = pending.pop()
        if kind.code == code:
            found = kind
            break
        pending.extend(kind.__subclasses__())
    error = found(message)
    if found is AgentHostError:
        error.code = code
    return error
