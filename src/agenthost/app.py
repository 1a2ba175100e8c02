"""The HTTP API (DESIGN.md, "HTTP / WebSocket contract") as a Starlette app over the engine.

Handlers are thin: validate the path, decode the body with its msgspec type, call the store
or the turn engine, encode the answer. Every error leaves as `{"error": {"code", "message"}}`
with its status; nothing a client sends can produce a 500 or stop the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from agenthost import __version__
from agenthost.agents import AgentRunner, load_agent
from agenthost.auth.authenticators import Authenticator, create_authenticator
from agenthost.auth.principal import Principal, public_session_id, scoped_session_id
from agenthost.brokers import StreamBroker, StreamEvent, create_broker
from agenthost.brokers.instrumented import InstrumentedBroker
from agenthost.drain import Drain
from agenthost.engine import TurnEngine
from agenthost.errors import (
    AgentHostError,
    BadRequest,
    InvalidJSON,
    JSONTooDeep,
    PayloadTooLarge,
    SessionNotFound,
    TurnNotFound,
    Unauthorized,
    ValidationFailed,
)
from agenthost.hot_routes import HotRoutes
from agenthost.ids import check_session_id, check_turn_id, new_session_id, new_turn_id
from agenthost.limits import InputLimits
from agenthost.llm import create_llm
from agenthost.llm.base import LLMClient
from agenthost.llm.cache import cached_llm
from agenthost.llm.instrumented import InstrumentedLLM
from agenthost.logs import RequestContext, bind_turn
from agenthost.metrics import Metrics
from agenthost.openapi import Endpoint, Param, docs_html, openapi_document
from agenthost.ratelimit import create_limiter
from agenthost.ratelimit.gate import TurnGate
from agenthost.settings import Settings, broker_url, limiter_url
from agenthost.sse import SSEResponse
from agenthost.stores import SessionStore, create_store
from agenthost.stores.base import SessionInfo, TurnError, TurnRecord
from agenthost.stores.instrumented import InstrumentedStore
from agenthost.streamed_turns import StreamedTurn, start_streamed_turn
from agenthost.streaming import ChunkFlusher
from agenthost.tracing import Tracing, create_tracing
from agenthost.websocket import CLOSE_SERVICE_RESTART, WebSocketSession, websocket_endpoint
from agenthost.wire import (
    ChatRequest,
    ChatResponse,
    CreateSession,
    ErrorBody,
    ErrorDetail,
    Health,
    MessageOut,
    MessagesOut,
    SessionOut,
    TurnErrorOut,
    TurnOut,
    TurnRequest,
    TurnStatusOut,
)

__all__ = ["build_app"]

log = logging.getLogger("agenthost.app")

T = TypeVar("T")
JSON = "application/json"
_encode = msgspec.json.Encoder().encode


def _json(body: msgspec.Struct, status: int = 200) -> Response:
    return Response(_encode(body), status_code=status, media_type=JSON)


def error_response(exc: AgentHostError) -> Response:
    """The JSON error response for `exc`, with Retry-After where it has one."""
    headers = dict(exc.headers) if exc.headers else None
    if exc.retry_after is not None:
        headers = headers or {}
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    body = ErrorBody(ErrorDetail(exc.code, exc.message))
    return Response(_encode(body), status_code=exc.status, media_type=JSON, headers=headers)


class _Decoder:
    """A cached msgspec decoder that maps failures to 400 (bad JSON) or 422 (bad field)."""

    def __init__(self, typ: type[T]) -> None:
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(typ)

    def __call__(self, body: bytes) -> Any:
        try:
            return self._decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise ValidationFailed(str(exc)) from None
        except msgspec.DecodeError as exc:
            raise InvalidJSON(f"the body is not valid JSON: {exc}") from None
        except RecursionError:
            raise JSONTooDeep("the body's JSON nests too deeply") from None


class API:
    """The handlers, bound to one engine and store (built in the app's lifespan)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limits = InputLimits.from_settings(settings)
        self.engine: TurnEngine | None = None
        self.drain: Drain | None = None
        self._broker: StreamBroker | None = None
        # One timer per coalescing window for all of this process's streams.
        self.chunk_flusher = ChunkFlusher(settings.chunk_coalesce_ms / 1000)
        self.websockets: set[WebSocketSession] = set()
        self._turn_decoder = _Decoder(TurnRequest)
        self._create_decoder = _Decoder(CreateSession)
        self._chat_decoder = _Decoder(ChatRequest)
        self._auth: Authenticator | None = None
        self._gate: TurnGate | None = None

    @property
    def auth(self) -> Authenticator:
        assert self._auth is not None, "the app's lifespan has not started"
        return self._auth

    @property
    def gate(self) -> TurnGate:
        assert self._gate is not None, "the app's lifespan has not started"
        return self._gate

    @property
    def broker(self) -> StreamBroker:
        assert self._broker is not None, "the app's lifespan has not started"
        return self._broker

    @property
    def store(self) -> SessionStore:
        assert self.engine is not None, "the app's lifespan has not started"
        return self.engine.store

    # -- request plumbing -------------------------------------------------------------------

    async def _body(self, request: Request) -> bytes:
        return await read_body(
            request.receive, request.headers.get("content-length"), self.settings.max_body_bytes
        )

    async def _principal(self, request: Request) -> Principal:
        return await self.auth.authenticate(request.headers.get("authorization"))

    async def _session_id(self, request: Request) -> str:
        """The caller's session named in the path, as the store knows it (tenant-scoped)."""
        session_id = check_session_id(request.path_params["session_id"])
        principal = await self._principal(request)
        return scoped_session_id(principal.tenant, session_id)

    @staticmethod
    def _idempotency_key(request: Request) -> str | None:
        key = request.headers.get("idempotency-key")
        return None if key is None else check_turn_id(key)

    # -- sessions ---------------------------------------------------------------------------

    async def create_session(self, request: Request) -> Response:
        principal = await self._principal(request)
        body = await self._body(request)
        req = self._create_decoder(body) if body.strip() else CreateSession()
        self.limits.check_metadata(req.metadata)
        chosen = check_session_id(req.session_id) if req.session_id else new_session_id()
        session_id = scoped_session_id(principal.tenant, chosen)
        info = await self.store.create_session(session_id, req.metadata, self.settings.session_ttl)
        return _json(_session_out(info), 201)

    async def get_session(self, request: Request) -> Response:
        session_id = await self._session_id(request)
        info = await self.store.get_session(session_id)
        if info is None:
            raise SessionNotFound(f"no session {public_session_id(session_id)}")
        return _json(_session_out(info))

    async def delete_session(self, request: Request) -> Response:
        session_id = await self._session_id(request)
        if not await self.store.delete_session(session_id):
            raise SessionNotFound(f"no session {public_session_id(session_id)}")
        return Response(status_code=204)

    async def list_messages(self, request: Request) -> Response:
        session_id = await self._session_id(request)
        limit = _int_query(request, "limit", 100, 1, 1000)
        before = _int_query(request, "before", None, 0, 2**62)
        messages = await self.store.list_messages(session_id, limit, before)
        if messages is None:
            raise SessionNotFound(f"no session {public_session_id(session_id)}")
        out = [MessageOut(m.role, m.content, m.turn_id, m.created_at, m.seq) for m in messages]
        return _json(MessagesOut(out))

    # -- turns ------------------------------------------------------------------------------

    @property
    def _engine(self) -> TurnEngine:
        assert self.engine is not None, "the app's lifespan has not started"
        return self.engine

    async def post_turn(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /v1/sessions/{session_id}/turns as a plain ASGI endpoint: the turn is the hot
        path, so it skips building a Request and a Response object."""
        session_id = check_session_id(scope["path_params"]["session_id"])
        turn_id = declared = last_event_id = authorization = None
        accept = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"idempotency-key":
                turn_id = check_turn_id(value.decode("latin-1"))
            elif name == b"content-length":
                declared = value.decode("latin-1")
            elif name == b"accept":
                accept = value
            elif name == b"last-event-id":
                last_event_id = value.decode("latin-1")
        principal = await self.auth.authenticate(authorization)
        session_id = scoped_session_id(principal.tenant, session_id)
        body = await read_body(receive, declared, self.settings.max_body_bytes)
        req: TurnRequest = self._turn_decoder(body)
        self.limits.check_turn(req.message, req.metadata)
        limited = not principal.limits.unlimited
        if limited:
            turn_id = turn_id or new_turn_id()
            await self.gate.enter(principal, turn_id)
        if req.stream or b"text/event-stream" in accept:
            try:
                after = _event_number(last_event_id)
                response = await self._stream_turn(session_id, turn_id, req, after, principal)
            except BaseException:
                if limited:
                    self.gate.leave(principal, turn_id or "")
                raise
            await response(scope, receive, send)
            return
        try:
            if req.on_disconnect == "cancel":
                record = await self._run_until_disconnect(session_id, turn_id, req, receive)
                if record is None:
                    return  # the client left; nobody to answer
            else:
                record = await self._engine.run_turn(
                    session_id,
                    req.message,
                    turn_id=turn_id,
                    metadata=req.metadata,
                    on_busy=req.on_busy,
                )
        finally:
            if limited:
                self.gate.leave(principal, turn_id or "")
        payload = _encode(_turn_out(record))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(payload)),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _run_until_disconnect(
        self, session_id: str, turn_id: str | None, req: TurnRequest, receive: Receive
    ) -> TurnRecord | None:
        """A non-streamed turn with `on_disconnect=cancel`: stopped if the client leaves."""
        engine = self._engine
        turn_id = turn_id or new_turn_id()
        bind_turn(session_id, turn_id)
        task = asyncio.ensure_future(
            engine.run_turn(
                session_id,
                req.message,
                turn_id=turn_id,
                metadata=req.metadata,
                on_busy=req.on_busy,
            )
        )
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            if not engine.cancel_turn(session_id, turn_id, "the client disconnected"):
                task.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            return await task
        except (asyncio.CancelledError, AgentHostError):
            if gone:
                return None
            raise
        finally:
            watcher.cancel()

    async def _stream_turn(
        self,
        session_id: str,
        turn_id: str | None,
        req: TurnRequest,
        after: int,
        principal: Principal,
    ) -> Response:
        """SSE for one turn: numbered `chunk` events as the agent writes, then `done` or
        `error`. The turn runs in its own task and publishes to the stream broker, so it
        finishes and commits even if the client leaves (unless `on_disconnect=cancel`); the
        client resumes on any process by sending the same request again with its
        `Idempotency-Key` and `Last-Event-ID`, or with GET .../turns/{turn_id}/stream."""
        streamed = await start_streamed_turn(
            self,
            session_id,
            turn_id,
            req.message,
            metadata=req.metadata,
            on_busy=req.on_busy,
            after=after,
        )
        self.leave_when_done(principal, streamed)
        on_gone = streamed.cancel if req.on_disconnect == "cancel" else None
        return self._sse(streamed.events, on_gone)

    @property
    def _stream_wait(self) -> float:
        # A reader waits for the next event at most as long as a turn may run.
        return self.settings.turn_timeout + self.settings.lease_ttl

    def _sse(
        self, events: AsyncIterator[StreamEvent], on_gone: Callable[[], None] | None = None
    ) -> Response:
        """The events as SSE; `on_gone` is called if the client leaves before the end."""
        return SSEResponse(events, self._engine.metrics, on_gone)

    async def resume_stream(self, request: Request) -> Response:
        """GET .../turns/{turn_id}/stream: the turn's events after `Last-Event-ID` (or
        `?after=`), from whichever process runs it."""
        session_id = await self._session_id(request)
        turn_id = check_turn_id(request.path_params["turn_id"])
        after = _event_number(
            request.headers.get("last-event-id") or request.query_params.get("after")
        )
        return self._sse(await self.turn_events(session_id, turn_id, after))

    async def turn_events(
        self, session_id: str, turn_id: str, after: int
    ) -> AsyncIterator[StreamEvent]:
        """A turn's events after `after`: from the broker while it has them, else (a
        finished turn whose stream expired) its final event from the turn record."""
        record = await self.store.get_turn(session_id, turn_id)
        if record is None:
            raise TurnNotFound(f"no turn {turn_id} in session {public_session_id(session_id)}")
        if record.status in ("completed", "failed") and not await self.broker.exists(
            session_id, turn_id
        ):
            return _final_from_record(record, after)
        return self.broker.read(session_id, turn_id, after, self._stream_wait)

    def leave_when_done(self, principal: Principal, streamed: StreamedTurn) -> None:
        """Free the turn's in-flight slot when its task ends (now, for a replay)."""
        if principal.limits.max_inflight <= 0:
            return
        task = streamed.task
        if task is None or task.done():
            self.gate.leave(principal, streamed.turn_id)
        else:
            task.add_done_callback(lambda _: self.gate.leave(principal, streamed.turn_id))

    def keep(self, task: asyncio.Task[None]) -> None:
        """Hold a reference to a background task until it ends."""
        _background.add(task)
        task.add_done_callback(_background.discard)

    def close_idle_websockets(self) -> None:
        """At drain: close connections with no turn running (1012); the others close when
        their turns end."""
        for connection in list(self.websockets):
            if not connection.tasks:
                connection.close(CLOSE_SERVICE_RESTART)

    async def websocket(self, ws: WebSocket, send: Send) -> None:
        """Serve a WebSocket; `send` is the server's own, for frames sent past `ws`."""

        def counted(delta: int) -> None:
            self._engine.metrics.open_websockets += delta

        await websocket_endpoint(self, ws, send, counted)

    async def get_turn(self, request: Request) -> Response:
        session_id = await self._session_id(request)
        turn_id = check_turn_id(request.path_params["turn_id"])
        record = await self.store.get_turn(session_id, turn_id)
        if record is None:
            raise TurnNotFound(f"no turn {turn_id} in session {public_session_id(session_id)}")
        error = (
            None if record.error is None else TurnErrorOut(record.error.code, record.error.message)
        )
        return _json(TurnStatusOut(turn_id, record.status, record.response, error))

    async def chat(self, request: Request) -> Response:
        session_id = await self._session_id(request)
        req: ChatRequest = self._chat_decoder(await self._body(request))
        self.limits.check_message(req.message)
        principal = await self._principal(request)
        turn_id = self._idempotency_key(request) or new_turn_id()
        await self.gate.enter(principal, turn_id)
        try:
            record = await self._engine.run_turn(session_id, req.message, turn_id=turn_id)
        finally:
            self.gate.leave(principal, turn_id)
        return _json(ChatResponse(record.response or ""))

    # -- health -----------------------------------------------------------------------------

    async def admin_drain(self, request: Request) -> Response:
        self._check_admin(request)
        assert self.drain is not None, "the app's lifespan has not started"
        self.drain.start("POST /admin/drain")
        return _json(Health("draining"), 202)

    async def metrics(self, request: Request) -> Response:
        if self.settings.metrics_require_admin:
            self._check_admin(request)
        return Response(
            self._engine.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    def _check_admin(self, request: Request) -> None:
        token = self.settings.admin_token
        if not token:
            raise Unauthorized("admin routes are disabled: start the server with --admin-token")
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.encode(), token.encode()):
            raise Unauthorized("admin routes need Authorization: Bearer <admin token>")

    async def healthz(self, request: Request) -> Response:
        return _json(Health("ok"))

    async def readyz(self, request: Request) -> Response:
        engine = self._engine
        if engine.draining:
            return _json(Health("draining"), 503)
        try:
            await engine.store.ping()
        except AgentHostError:
            return _json(Health("store_unavailable"), 503)
        return _json(Health("ready"))


_background: set[asyncio.Task[None]] = set()


async def _final_from_record(record: TurnRecord, after: int) -> AsyncIterator[StreamEvent]:
    if record.status == "completed":
        yield StreamEvent(after + 1, "done", _encode(_turn_out(record)))
    else:
        error = record.error or TurnError("failed", "the turn failed")
        yield StreamEvent(after + 1, "error", _encode(ErrorDetail(error.code, error.message)))


async def read_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
        if size > limit:
            raise PayloadTooLarge(f"the body is {size} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        if chunk:
            total += len(chunk)
            if total > limit:
                raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class ASGIEndpoint:
    """Marks a handler that speaks ASGI itself, so the router does not wrap it in a Request."""

    def __init__(self, handler: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.handler = handler
        self.__name__ = handler.__name__

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(scope, receive, send)


def _event_number(raw: str | None) -> int:
    """`Last-Event-ID` (or `?after=`): the last event number the client has, 0 for none."""
    if not raw:
        return 0
    try:
        after = int(raw)
    except ValueError:
        raise ValidationFailed("Last-Event-ID must be an event number") from None
    if after < 0:
        raise ValidationFailed("Last-Event-ID must be >= 0")
    return after


def _session_out(info: SessionInfo) -> SessionOut:
    out: SessionOut = msgspec.convert(info, SessionOut, from_attributes=True)
    return msgspec.structs.replace(out, session_id=public_session_id(out.session_id))


def _turn_out(record: TurnRecord) -> TurnOut:
    return TurnOut(public_session_id(record.session_id), record.turn_id, record.response or "")


def _int_query(request: Request, name: str, default: T, low: int, high: int) -> int | T:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationFailed(f"query parameter {name} must be an integer") from None
    if not low <= value <= high:
        raise ValidationFailed(f"query parameter {name} must be between {low} and {high}")
    return value


def endpoints(api: API) -> list[Endpoint]:
    """The routes of the API with what each takes and returns (also the OpenAPI source)."""
    sid_errors = (400, 404, 503)
    turn_errors = (400, 404, 409, 413, 422, 502, 503)
    key = Param(
        "Idempotency-Key",
        "header",
        {"type": "string", "pattern": r"^[A-Za-z0-9._:-]{1,128}$"},
        "The turn id: a retry with the same key returns the same answer, with no second "
        "agent call. Generated when absent.",
    )
    return [
        Endpoint("POST", "/v1/sessions", api.create_session, "Create a session",
                 CreateSession, SessionOut, 201, (400, 409, 413, 422, 503)),
        Endpoint("GET", "/v1/sessions/{session_id}", api.get_session, "Get a session",
                 None, SessionOut, 200, sid_errors),
        Endpoint("DELETE", "/v1/sessions/{session_id}", api.delete_session,
                 "Delete a session with all its messages and turns", None, None, 204,
                 sid_errors),
        Endpoint("GET", "/v1/sessions/{session_id}/messages", api.list_messages,
                 "Messages, oldest first: the newest `limit` with seq < `before`",
                 None, MessagesOut, 200, (*sid_errors, 422),
                 params=(
                     Param("limit", "query", {"type": "integer", "minimum": 1,
                                              "maximum": 1000, "default": 100}),
                     Param("before", "query", {"type": "integer", "minimum": 0},
                           "Only messages with seq below this."),
                 )),
        Endpoint("POST", "/v1/sessions/{session_id}/turns", ASGIEndpoint(api.post_turn),
                 "Run a turn (creates the session if unknown); SSE with stream:true",
                 TurnRequest, TurnOut, 200, turn_errors, params=(key,), streams=True),
        Endpoint("GET", "/v1/sessions/{session_id}/turns/{turn_id}", api.get_turn,
                 "A turn's status", None, TurnStatusOut, 200, sid_errors),
        Endpoint("GET", "/v1/sessions/{session_id}/turns/{turn_id}/stream", api.resume_stream,
                 "The turn's events as SSE after Last-Event-ID, on any process", None, None,
                 200, (*sid_errors, 422),
                 params=(Param("Last-Event-ID", "header", {"type": "string"},
                               "Resume after this event number."),), streams=True),
        Endpoint("POST", "/chat/{session_id}", api.chat,
                 "The reference design's chat endpoint", ChatRequest, ChatResponse, 200,
                 turn_errors, params=(key,), tags=("compat",)),
        Endpoint("GET", "/healthz", api.healthz, "Liveness", None, Health, 200, (),
                 tags=("health",)),
        Endpoint("GET", "/readyz", api.readyz, "Readiness: 503 while draining or when the "
                 "store is unreachable", None, Health, 200, (503,), tags=("health",)),
        Endpoint("POST", "/admin/drain", api.admin_drain, "Drain: refuse new turns, finish "
                 "in-flight ones, then exit (Authorization: Bearer <admin token>)", None,
                 Health, 202, (401,), tags=("admin",)),
        Endpoint("GET", "/metrics", api.metrics, "Prometheus metrics (text format)", None,
                 None, 200, (), tags=("health",)),
    ]  # fmt: skip


def build_app(
    settings: Settings,
    *,
    store: SessionStore | None = None,
    agent: AgentRunner | None = None,
    llm: LLMClient | None = None,
    tracing: Tracing | None = None,
) -> Starlette:
    """The ASGI app for `settings`; `store`, `agent`, `llm` and `tracing` override the
    configured ones (tests and embedding). The app's lifespan opens the store and closes store
    and LLM."""
    api = API(settings)
    tracing = tracing or create_tracing(settings.otel)
    eps = endpoints(api)
    openapi = openapi_document(eps, title="agenthost", version=__version__)
    docs = docs_html(eps, title="agenthost API")

    async def openapi_json(request: Request) -> Response:
        return Response(openapi, media_type=JSON)

    async def docs_page(request: Request) -> Response:
        return Response(docs, media_type="text/html")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        the_store = store or create_store(settings.store)
        the_llm = llm or create_llm(
            settings.llm,
            model=settings.llm_model,
            api_key=settings.llm_api_key,
            transport=settings.llm_transport,
        )
        if settings.llm_cache:
            the_llm = cached_llm(
                the_llm,
                settings.llm_cache,
                ttl_s=settings.llm_cache_ttl,
                upstream=settings.llm,
                store_url=settings.store,
            )
        the_agent = agent or load_agent(settings.app)
        await the_store.open()
        metrics = Metrics()
        auth = create_authenticator(settings)
        await auth.open()
        api._auth = auth
        # An in-flight slot of a process that died frees itself after the longest turn.
        hold_s = settings.turn_timeout + settings.lease_ttl
        limiter = create_limiter(limiter_url(settings), hold_s=hold_s)
        await limiter.open()
        api._gate = TurnGate(limiter, metrics)
        measured_llm = InstrumentedLLM(the_llm, metrics, tracing)
        metrics.llm_cache = measured_llm.cache_counts
        broker = create_broker(broker_url(settings), stream_ttl=settings.stream_ttl)
        broker = InstrumentedBroker(broker, metrics, tracing)
        await broker.open()
        api._broker = broker
        engine = TurnEngine(
            InstrumentedStore(the_store, metrics, tracing),
            the_agent,
            measured_llm,
            session_ttl=settings.session_ttl,
            history_window=settings.history_window,
            lease_ttl=settings.lease_ttl,
            enqueue_timeout=settings.enqueue_timeout,
            turn_timeout=settings.turn_timeout,
            max_inflight_turns=settings.max_inflight_turns,
            metrics=metrics,
            tracing=tracing,
        )
        engine.start()
        api.engine = engine
        api.drain = Drain(engine, settings.drain_timeout)
        api.drain.on_start.append(api.close_idle_websockets)
        app.state.engine = engine
        exit_process = getattr(app.state, "exit_process", None)
        if exit_process is not None:
            exit_process(api.drain)
        try:
            yield
        finally:
            # Whatever stops the server, in-flight turns get the drain's chance to commit.
            api.drain.start("shutdown")
            await api.drain.wait()
            await engine.stop()
            await broker.close()
            await limiter.close()
            await auth.close()
            await the_store.close()
            await the_llm.close()

    routes: list[BaseRoute] = [Route(ep.path, ep.handler, methods=[ep.method]) for ep in eps]
    routes += [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs_page, methods=["GET"]),
    ]
    handlers: dict[Any, Callable[..., Any]] = {
        AgentHostError: _agenthost_error,
        HTTPException: _http_error,
        ClientDisconnect: _client_gone,
        Exception: _unexpected_error,
    }
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=handlers,
        middleware=[
            Middleware(RequestContext, tracing=tracing),
            Middleware(HotRoutes, api=api, handlers=handlers),
        ],
    )


async def _agenthost_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AgentHostError)
    _count_rejection(request, exc.status, exc.code)
    return error_response(exc)


def _count_rejection(request: Request, status: int, code: str) -> None:
    engine = getattr(request.app.state, "engine", None)
    if engine is not None:
        engine.metrics.error_answered(status, code)


async def _client_gone(request: Request, exc: Exception) -> Response:
    # The client left mid-request: nobody reads this answer, and it is not a server error.
    return Response(status_code=400)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    _count_rejection(request, exc.status_code, code)
    body = ErrorBody(ErrorDetail(code, str(exc.detail)))
    return Response(
        _encode(body), status_code=exc.status_code, media_type=JSON, headers=exc.headers
    )


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    body = ErrorBody(ErrorDetail("internal_error", "an unexpected error; it has been logged"))
    return Response(_encode(body), status_code=500, media_type=JSON)
