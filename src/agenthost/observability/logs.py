"""Logs as JSON lines (or human-readable console lines), through structlog, with the ids that
tie a line to its request: `request_id`, `session_id`, `turn_id` and `tenant`.

The ids live in context variables: the `RequestContext` middleware binds `request_id` (the
client's `X-Request-ID`, or one made here; echoed in the response), the turn engine binds
`session_id` and `turn_id` (`bind_turn`), the auth layer binds `tenant` (`bind_tenant`). Every
line, structlog's or the standard library's (uvicorn's included), carries those that are set.

What never reaches a log line: message content (keys such as `message`, `content`, `prompt`,
`response`) unless `--log-content`, and secrets at any setting: keys such as
`authorization`, `api_key`, `token`, and in free text, bearer tokens, JWTs, `sk-` API keys
and the configured `--llm-api-key` / `--admin-token`.

The access log writes one line per HTTP request (`event="request"`) at info level; below
that level it costs one attribute check. In JSON its lines skip structlog's processor chain
(their fields are known and safe) and leave in batches, one write every 50 ms at most, so
a turn does not pay a system call for its access line.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import itertools
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, MutableMapping
from contextvars import ContextVar
from time import perf_counter
from typing import TYPE_CHECKING, Any, TextIO

import msgspec
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agenthost.observability.structlog_loader import load_structlog

if TYPE_CHECKING:
    import structlog
else:
    structlog = load_structlog()

if TYPE_CHECKING:
    from agenthost.core.settings import Settings
    from agenthost.observability.tracing import ActiveSpan, Tracing

__all__ = [
    "LOG_FORMATS",
    "REQUEST_ID_HEADER",
    "AccessLog",
    "Redactor",
    "RequestContext",
    "TurnLog",
    "bind_tenant",
    "bind_turn",
    "configure_logging",
    "current_request_id",
    "current_tenant",
    "flush_access_log",
    "in_turn_context",
    "reset_logging",
    "turn_log",
]

LOG_FORMATS = ("auto", "json", "console")
REQUEST_ID_HEADER = b"x-request-id"
REDACTED = "[redacted]"

SECRET_KEYS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "api_key", "apikey",
     "llm_api_key", "admin_token", "token", "access_token", "refresh_token", "id_token", "jwt",
     "password", "secret", "client_secret", "x-api-key"}
)  # fmt: skip
"""Keys whose values are redacted at every setting (compared in lower case)."""

CONTENT_KEYS = frozenset(
    {"message", "messages", "content", "prompt", "response", "answer", "text", "chunk"}
)
"""Keys holding conversation text: redacted unless `--log-content`."""

# Bearer credentials, JWTs (three base64url parts, the first a JSON header) and OpenAI-style
# keys, found in free text such as exception messages.
_SECRET_TEXT = re.compile(
    r"(?i:bearer)\s+[A-Za-z0-9._~+/=-]+"
    r"|eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"
    r"|sk-[A-Za-z0-9_-]{12,}"
)
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")

_request_id: ContextVar[str | None] = ContextVar("agenthost_request_id", default=None)
_session_id: ContextVar[str | None] = ContextVar("agenthost_session_id", default=None)
_turn_id: ContextVar[str | None] = ContextVar("agenthost_turn_id", default=None)
_tenant: ContextVar[str | None] = ContextVar("agenthost_tenant", default=None)

# Request ids made here: a random per-process prefix and a counter (unique across a fleet,
# and cheaper than a UUID per request).
_ID_PREFIX = os.urandom(6).hex()
_id_counter = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}-{next(_id_counter):x}"


def bind_tenant(tenant: str) -> None:
    """Tag this request's log lines (and its turn span) with `tenant`; the auth layer calls
    it once it knows who is asking."""
    _tenant.set(tenant)


def bind_turn(session_id: str, turn_id: str) -> None:
    """Tag the rest of this task's log lines with the turn (the engine calls it)."""
    _session_id.set(session_id)
    _turn_id.set(turn_id)


def in_turn_context(
    session_id: str, turn_id: str, call: Callable[..., object], *args: object
) -> None:
    """Run `call(*args)` with only this turn's ids bound: for code that runs outside the
    turn's own task (a reply callback, a timer shared by many streams), whose context
    belongs to whichever request happened to set it up."""
    context = contextvars.Context()
    context.run(bind_turn, session_id, turn_id)
    context.run(call, *args)


def current_tenant() -> str | None:
    return _tenant.get()


def current_request_id() -> str | None:
    return _request_id.get()


def _bind_request(request_id: str) -> None:
    _request_id.set(request_id)
    _session_id.set(None)
    _turn_id.set(None)
    _tenant.set(None)


# -- processors ---------------------------------------------------------------------------


def add_request_context(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Add request_id, session_id, turn_id and tenant where set (a line's own wins)."""
    for key, var in (
        ("request_id", _request_id),
        ("session_id", _session_id),
        ("turn_id", _turn_id),
        ("tenant", _tenant),
    ):
        value = var.get()
        if value is not None:
            event_dict.setdefault(key, value)
    return event_dict


class Redactor:
    """A structlog processor that removes secrets always and conversation text unless
    `log_content`; `secrets` are literal values (configured keys and tokens) to blank out
    of free text as well."""

    def __init__(self, *, log_content: bool, secrets: Iterable[str | None] = ()) -> None:
        self.log_content = log_content
        self.secrets = tuple(s for s in secrets if s and len(s) >= 4)
        self.hidden = SECRET_KEYS if log_content else SECRET_KEYS | CONTENT_KEYS

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _SECRET_TEXT.sub(REDACTED, text)

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        hidden = self.hidden
        for key, value in event_dict.items():
            if key.lower() in hidden:
                event_dict[key] = REDACTED
            elif key in ("event", "exception") and isinstance(value, str):
                event_dict[key] = self.scrub(value)
        return event_dict


_json_encode = msgspec.json.Encoder(enc_hook=repr).encode


def _render_json(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> str:
    return _json_encode(event_dict).decode()


# -- configuration ------------------------------------------------------------------------


class AccessLog:
    """Writes access lines: JSON encoded here and written in batches (at most
    `FLUSH_AFTER_S` late; at once past `MAX_PENDING` lines), or console lines through
    structlog. Fields: timestamp, level, logger, event, the request's ids, and the caller's."""

    FLUSH_AFTER_S = 0.05
    MAX_PENDING = 256

    def __init__(self, stream: TextIO, as_json: bool) -> None:
        self._stream = stream
        self._as_json = as_json
        self._console = structlog.get_logger().bind(logger="agenthost.access")
        self._pending: list[bytes] = []
        self._second = -1
        self._second_text = ""

    def _timestamp(self) -> str:
        # The date and time of day change once a second: format them once a second.
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((now - second) * 1_000_000):06d}Z"

    def write(self, event: str, fields: dict[str, Any]) -> None:
        if not self._as_json:
            self._console.info(event, **fields)
            return
        record: dict[str, Any] = {
            "timestamp": self._timestamp(),
            "level": "info",
            "logger": "agenthost.access",
            "event": event,
        }
        add_request_context(None, "info", record)
        record.update(fields)
        pending = self._pending
        pending.append(_json_encode(record))
        if len(pending) == 1:
            try:
                asyncio.get_running_loop().call_later(self.FLUSH_AFTER_S, self.flush)
            except RuntimeError:  # no loop: write now
                self.flush()
        elif len(pending) >= self.MAX_PENDING:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        text = b"\n".join(self._pending).decode() + "\n"
        self._pending.clear()
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # the stream is gone (shutdown): nothing to do
            pass


class _Loggers:
    """What `configure_logging` decided, read on hot paths as plain attributes."""

    def __init__(self) -> None:
        self.access: AccessLog | None = None  # set when access lines are on
        self.flush_at_exit = False
        self.handler: logging.Handler | None = None


_loggers = _Loggers()


def flush_access_log() -> None:
    """Write out access lines still waiting for their batch (at shutdown)."""
    if _loggers.access is not None:
        _loggers.access.flush()


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """Send structlog's and the standard library's logs to `stream` (stderr) as JSON lines
    (`--log-format json`, or `auto` when stderr is not a terminal) or console lines, at
    `--log-level`, with the request ids added and secrets (and content) redacted."""
    stream = stream or sys.stderr
    level = logging.getLevelNamesMapping()[settings.log_level.upper()]
    fmt = settings.log_format
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: Any = (
        _render_json if fmt == "json" else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    redactor = Redactor(
        log_content=settings.log_content, secrets=(settings.llm_api_key, settings.admin_token)
    )
    shared: list[Any] = [
        add_request_context,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redactor,
    ]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    _loggers.handler = handler
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    flush_access_log()
    _loggers.access = (
        AccessLog(stream, fmt == "json") if settings.access_log and level <= logging.INFO else None
    )
    if not _loggers.flush_at_exit:
        _loggers.flush_at_exit = True
        atexit.register(flush_access_log)
    turn_log.logger = (
        structlog.get_logger().bind(logger="agenthost.turn") if level <= logging.DEBUG else None
    )
    turn_log.enabled = turn_log.logger is not None
    turn_log.log_content = settings.log_content


def reset_logging() -> None:
    """Undo `configure_logging` (for tests and embedders): flush, remove its handler, and
    return structlog, the access log and the turn log to their defaults."""
    flush_access_log()
    if _loggers.handler is not None:
        logging.getLogger().removeHandler(_loggers.handler)
        _loggers.handler = None
    _loggers.access = None
    structlog.reset_defaults()
    turn_log.logger = None
    turn_log.enabled = False
    turn_log.log_content = False


class TurnLog:
    """The per-turn debug line (`event="turn"`): outcome and duration, plus the message and
    the answer with `--log-content`. `enabled` is the engine's one check per turn."""

    def __init__(self) -> None:
        self.enabled = False
        self.logger: Any = None
        self.log_content = False

    def finished(self, outcome: str, seconds: float, message: str, response: str | None) -> None:
        if self.logger is None:
            return
        fields: dict[str, Any] = {"outcome": outcome, "duration_ms": round(seconds * 1000, 3)}
        if self.log_content:
            fields["message"] = message
            fields["response"] = response
        self.logger.debug("turn", **fields)


turn_log = TurnLog()


# -- the request middleware ---------------------------------------------------------------


class RequestContext:
    """ASGI middleware: binds `request_id` (from `X-Request-ID` if it is a sane id, else a
    new one) and echoes it in the response; writes the access line; with tracing, runs the
    request in a server span that continues the caller's `traceparent` and answers with
    `traceresponse`."""

    def __init__(self, app: ASGIApp, *, tracing: Tracing | None = None) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                candidate = value.decode("latin-1")
                if _VALID_REQUEST_ID.fullmatch(candidate):
                    request_id = candidate
                break
        if request_id is None:
            request_id = new_request_id()
        _bind_request(request_id)
        if kind != "http":
            await self._websocket(scope, receive, send)
            return
        extra = [(REQUEST_ID_HEADER, request_id.encode())]
        span = None
        if self.tracing is not None:
            span = self.tracing.server_span(scope["method"], scope["path"], _trace_headers(scope))
            span.span.set_attribute("agenthost.request_id", request_id)
            extra.append((b"traceresponse", span.traceparent.encode()))
        status = 500
        started = perf_counter()

        async def send_with_ids(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_ids)
        except BaseException as exc:
            if span is not None:
                span.fail(exc)
            raise
        finally:
            if span is not None:
                _finish_server_span(span, scope, status)
            access = _loggers.access
            if access is not None:
                duration_ms = round((perf_counter() - started) * 1000, 3)
                access.write(
                    "request",
                    {
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": duration_ms,
                    },
                )

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            access = _loggers.access
            if access is not None:
                duration_ms = round((perf_counter() - started) * 1000, 3)
                access.write("websocket", {"path": scope["path"], "duration_ms": duration_ms})


def _trace_headers(scope: Scope) -> dict[str, str]:
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope["headers"]
        if name in (b"traceparent", b"tracestate")
    }


def _finish_server_span(span: ActiveSpan, scope: Scope, status: int) -> None:
    route = scope.get("route")
    template = getattr(route, "path", None)
    if template:
        span.span.update_name(f"{scope['method']} {template}")
        span.span.set_attribute("http.route", template)
    span.span.set_attribute("http.response.status_code", status)
    if status >= 500:
        from opentelemetry.trace import StatusCode

        span.span.set_status(StatusCode.ERROR, str(status))
    span.end()
