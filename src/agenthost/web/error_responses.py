"""Errors as HTTP answers: every error leaves as `{"error": {"code", "message"}}` with its
status, `Retry-After` where it has one, and is counted by reason in the metrics. Nothing a
client sends produces a 500; an unexpected exception is logged and answered 500 without
detail."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from agenthost.core.errors import AgentHostError
from agenthost.observability.metrics import Metrics
from agenthost.web.schemas import ErrorBody, ErrorDetail

__all__ = ["ErrorHandler", "error_handlers", "error_response", "json_response"]

log = logging.getLogger("agenthost.app")

JSON = "application/json"
_encode = msgspec.json.Encoder().encode

ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def json_response(body: msgspec.Struct, status: int = 200) -> Response:
    return Response(_encode(body), status_code=status, media_type=JSON)


def error_response(exc: AgentHostError) -> Response:
    """The JSON error response for `exc`, with Retry-After where it has one."""
    headers = dict(exc.headers) if exc.headers else None
    if exc.retry_after is not None:
        headers = headers or {}
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    body = ErrorBody(ErrorDetail(exc.code, exc.message))
    return Response(_encode(body), status_code=exc.status, media_type=JSON, headers=headers)


def error_handlers(metrics: Metrics) -> dict[Any, ErrorHandler]:
    """The app's exception handlers, counting each answered error in `metrics`."""

    async def agenthost_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AgentHostError)
        metrics.error_answered(exc.status, exc.code)
        return error_response(exc)

    async def client_gone(request: Request, exc: Exception) -> Response:
        # The client left mid-request: nobody reads this answer, and it is not a server error.
        return Response(status_code=400)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        metrics.error_answered(exc.status_code, code)
        body = ErrorBody(ErrorDetail(code, str(exc.detail)))
        return Response(
            _encode(body), status_code=exc.status_code, media_type=JSON, headers=exc.headers
        )

    async def unexpected_error(request: Request, exc: Exception) -> Response:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        body = ErrorBody(ErrorDetail("internal_error", "an unexpected error; it has been logged"))
        return Response(_encode(body), status_code=500, media_type=JSON)

    return {
        AgentHostError: agenthost_error,
        HTTPException: http_error,
        ClientDisconnect: client_gone,
        Exception: unexpected_error,
    }
