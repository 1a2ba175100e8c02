"""The one route table and the ASGI app built from it.

`route_table` lists every route, HTTP and WebSocket, with what it takes and returns; the
router, `/openapi.json`, `/docs` and the Kubernetes checks all come from that list. The
routes every turn takes (the turn POST and the WebSocket, marked `fast`) are served by
`FastLane` straight from the middleware stack, past Starlette's router (which would try each
route's pattern in turn) and its exception middleware: per turn that is a few regex matches
and two coroutine frames less, and an open WebSocket holds none of those frames while it
idles. Their patterns are compiled from the same table entries, and their errors are answered
by the same handlers as every other route's.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute, request_response
from starlette.types import ASGIApp, Receive, Scope, Send

from agenthost.core.errors import InvalidSessionId, UpgradeRequired
from agenthost.core.ids import ID_PATTERN, ID_RE
from agenthost.observability.logs import RequestContext
from agenthost.observability.tracing import Tracing
from agenthost.web.adapters.ag_ui import AGUIRoutes, RunAgentInput
from agenthost.web.adapters.ai_sdk import AISDKChatRequest, AISDKRoutes
from agenthost.web.adapters.openai_chat import (
    ChatCompletion,
    ChatCompletionRequest,
    ModelList,
    OpenAIChatRoutes,
)
from agenthost.web.adapters.openai_responses import (
    OpenAIResponsesRoutes,
    ResponseObject,
    ResponsesRequest,
)
from agenthost.web.cors import cors_middleware
from agenthost.web.dashboard_routes import DashboardRoutes, FleetOut
from agenthost.web.endpoints import Endpoint, Param
from agenthost.web.error_responses import ErrorHandler
from agenthost.web.pages import PageRoutes
from agenthost.web.process_routes import ProcessRoutes
from agenthost.web.requests import AFTER_SCHEMA, LAST_EVENT_ID_SCHEMA, MAX_BEFORE
from agenthost.web.schemas import (
    ChatRequest,
    ChatResponse,
    CreateSession,
    Health,
    MessagesOut,
    SessionOut,
    TurnOut,
    TurnRequest,
    TurnStatusOut,
)
from agenthost.web.session_routes import SessionRoutes
from agenthost.web.turn_routes import TurnRoutes
from agenthost.web.websocket import (
    WEBSOCKET_PROTOCOL,
    ClientFrame,
    ServerFrame,
    WebSocketRoutes,
)

__all__ = [
    "ASGIEndpoint",
    "FastLane",
    "build_web_app",
    "fast_asgi",
    "route_pattern",
    "route_table",
]

log = logging.getLogger("agenthost.app")

ASGIHandler = Callable[[Scope, Receive, Send], Awaitable[None]]
Lifespan = Callable[[Starlette], AbstractAsyncContextManager[None]]


def route_table(
    sessions: SessionRoutes,
    turns: TurnRoutes,
    process: ProcessRoutes,
    websockets: WebSocketRoutes,
    openai_chat: OpenAIChatRoutes,
    ai_sdk: AISDKRoutes,
    ag_ui: AGUIRoutes,
    openai_responses: OpenAIResponsesRoutes,
    pages: PageRoutes,
    dashboard: DashboardRoutes,
) -> list[Endpoint]:
    """Every route of the API with what each takes and returns."""
    sid_errors = (400, 404, 503)
    turn_errors = (400, 404, 409, 413, 422, 502, 503)
    key = Param(
        "Idempotency-Key",
        "header",
        {"type": "string", "pattern": ID_PATTERN},
        "The turn id: a retry with the same key returns the same answer, with no second "
        "agent call. Generated when absent.",
    )
    min_seq = Param(
        "min_seq",
        "query",
        {"type": "integer", "minimum": 0, "maximum": MAX_BEFORE},
        "Read-your-writes: the answer includes at least the message with this seq (a server "
        "reading from a PostgreSQL replica that is behind asks the primary instead).",
    )
    last_event_id = Param(
        "Last-Event-ID",
        "header",
        LAST_EVENT_ID_SCHEMA,
        "Resume after this event number (what an EventSource sends when it reconnects). "
        "A turn POST that sends it must send Idempotency-Key too (else 400 turn_id_required).",
    )
    return [
        Endpoint("POST", "/v1/sessions", sessions.create_session, "Create a session",
                 CreateSession, SessionOut, 201, (400, 409, 413, 422, 503)),
        Endpoint("GET", "/v1/sessions/{session_id}", sessions.get_session, "Get a session",
                 None, SessionOut, 200, (*sid_errors, 422), params=(min_seq,)),
        Endpoint("DELETE", "/v1/sessions/{session_id}", sessions.delete_session,
                 "Delete a session with all its messages and turns", None, None, 204,
                 sid_errors),
        Endpoint("GET", "/v1/sessions/{session_id}/messages", sessions.list_messages,
                 "Messages, oldest first: the newest `limit` with seq < `before`",
                 None, MessagesOut, 200, (*sid_errors, 422),
                 params=(
                     Param("limit", "query", {"type": "integer", "minimum": 1,
                                              "maximum": 1000, "default": 100}),
                     Param("before", "query", {"type": "integer", "minimum": 0,
                                               "maximum": MAX_BEFORE},
                           "Only messages with seq below this."),
                     min_seq,
                 )),
        Endpoint("POST", "/v1/sessions/{session_id}/turns", turns.post_turn,
                 "Run a turn (creates the session if unknown); SSE with stream:true",
                 TurnRequest, TurnOut, 200, (204, *turn_errors, 429),
                 params=(key, last_event_id), streams=True, asgi=True, fast=True,
                 extra={"responses": {"202": {
                     "description": "Accepted: a background turn (background: true); poll "
                                    "the Location header's URL",
                     "content": {"application/json": {
                         "schema": {"$ref": "#/components/schemas/TurnAccepted"}}},
                 }}}),
        Endpoint("GET", "/v1/sessions/{session_id}/turns/{turn_id}", turns.get_turn,
                 "A turn's status", None, TurnStatusOut, 200, sid_errors),
        Endpoint("GET", "/v1/sessions/{session_id}/turns/{turn_id}/stream",
                 turns.resume_stream,
                 "The turn's events as SSE after Last-Event-ID, on any process", None, None,
                 200, (204, *sid_errors, 422),
                 params=(last_event_id, Param("after", "query", AFTER_SCHEMA,
                                              "Resume after this event number (as "
                                              "Last-Event-ID, which wins).")),
                 streams=True),
        Endpoint("GET", "/v1/sessions/{session_id}/ws", websockets.websocket,
                 "WebSocket: turns and resumes over one connection", ClientFrame,
                 ServerFrame, 101, (400, 426), asgi=True, fast=True, websocket=True,
                 extra={"description": WEBSOCKET_PROTOCOL}),
        Endpoint("POST", "/chat/{session_id}", turns.chat,
                 "The reference design's chat endpoint", ChatRequest, ChatResponse, 200,
                 turn_errors, params=(key,), tags=("compat",)),
        Endpoint("POST", "/openai/v1/chat/completions", fast_asgi(openai_chat.completions),
                 "OpenAI Chat Completions: the newest user message is a turn of the session "
                 "named by X-Session-Id (or X-OpenWebUI-Chat-Id, X-Conversation-Id); SSE "
                 "chunks ending in data: [DONE] with stream:true", ChatCompletionRequest,
                 ChatCompletion, 200, (*turn_errors, 401, 429),
                 params=(key, *_conversation_headers()), streams=True, events="protocol",
                 tags=("openai",),
                 asgi=True, fast=True),
        Endpoint("GET", "/openai/v1/models", openai_chat.models,
                 "The hosted agent (and the task model) as OpenAI models", None, ModelList,
                 200, (401,), tags=("openai",)),
        Endpoint("POST", "/openai/v1/responses", fast_asgi(openai_responses.create),
                 "OpenAI Responses: conversation (or previous_response_id's) = session; "
                 "stream:true for SSE events, background:true to answer at once",
                 ResponsesRequest, ResponseObject, 200, (*turn_errors, 401, 429),
                 params=(key,), streams=True, events="protocol", tags=("openai",), asgi=True,
                 fast=True),
        Endpoint("GET", "/openai/v1/responses/{response_id}", openai_responses.retrieve,
                 "A response's status and answer; stream=true: its events after "
                 "starting_after (agenthost's event number), from any process (run again if "
                 "its process died; 204 after the final event)", None,
                 ResponseObject, 200, (204, 400, 401, 404, 422, 429, 503), streams=True,
                 events="protocol", tags=("openai",),
                 params=(Param("stream", "query", {"type": "boolean"}),
                         Param("starting_after", "query", {"type": "integer", "minimum": 0},
                               "Resume after this sequence_number."))),
        Endpoint("POST", "/ai-sdk/v1/chat", fast_asgi(ai_sdk.chat),
                 "Vercel AI SDK UI message stream v1 (useChat's DefaultChatTransport): the chat "
                 "id is the session, the newest user message's id the turn id",
                 AISDKChatRequest, None, 200, (*turn_errors, 401, 429), streams=True,
                 events="protocol", tags=("ai-sdk",), asgi=True, fast=True),
        Endpoint("GET", "/ai-sdk/v1/chat/{chat_id}/stream", ai_sdk.resume,
                 "Resume (useChat's resume / reconnectToStream): the running turn's UI message "
                 "stream from its start, run again if its process died; 204 when no turn runs",
                 None, None, 200,
                 (400, 401, 429, 503), streams=True, events="protocol", tags=("ai-sdk",),
                 extra={"responses": {"204": {"description": "No turn runs in the chat"}}}),
        Endpoint("POST", "/ag-ui/v1/run", fast_asgi(ag_ui.run),
                 "AG-UI (HttpAgent, CopilotKit): a RunAgentInput runs the newest user message "
                 "as a turn of session threadId with turn id runId; SSE RUN_STARTED, "
                 "TEXT_MESSAGE_*, RUN_FINISHED or RUN_ERROR", RunAgentInput, None, 200,
                 (*turn_errors, 401, 429), streams=True, events="protocol", tags=("ag-ui",),
                 asgi=True, fast=True),
        Endpoint("GET", "/healthz", process.healthz, "Liveness", None, Health, 200, (),
                 tags=("health",)),
        Endpoint("GET", "/readyz", process.readyz, "Readiness: 503 while draining or when the "
                 "store is unreachable", None, Health, 200, (503,), tags=("health",)),
        Endpoint("POST", "/admin/drain", process.admin_drain, "Drain: refuse new turns, "
                 "finish in-flight ones, then exit (Authorization: Bearer <admin token>)",
                 None, Health, 202, (401,), tags=("admin",)),
        Endpoint("GET", "/metrics", process.metrics, "Prometheus metrics (text format)", None,
                 None, 200, (), tags=("health",)),
        Endpoint("GET", "/admin/fleet", dashboard.fleet, "The fleet: every live process's "
                 "last heartbeat and the autoscaler's decisions (admin token)", None, FleetOut,
                 200, (401, 503), tags=("admin",)),
        Endpoint("GET", "/admin/fleet/stream", dashboard.fleet_stream, "The same as SSE: a "
                 "`fleet` event per heartbeat interval (admin token)", None, None, 200,
                 (401, 503), streams=True, events="fleet", tags=("admin",)),
        Endpoint("GET", "/playground", pages.playground, "The playground: talk to the agent "
                 "in a browser (--playground)", None, None, 200, (404,), tags=("pages",),
                 extra=_HTML),
        Endpoint("GET", "/dashboard", pages.dashboard, "The fleet dashboard (its data needs "
                 "the admin token)", None, None, 200, (), tags=("pages",), extra=_HTML),
        Endpoint("GET", "/static/agenthost/{name}", pages.asset, "The pages' scripts and "
                 "stylesheet", None, None, 200, (404,), tags=("pages",),
                 extra=_ASSET),
    ]  # fmt: skip


_HTML = {"responses": {"200": {"description": "The page", "content": {"text/html": {}}}}}
_ASSET = {
    "responses": {
        "200": {"description": "The file", "content": {"text/css": {}, "text/javascript": {}}}
    }
}


def _conversation_headers() -> tuple[Param, ...]:
    text = {"type": "string", "pattern": ID_PATTERN}
    return (
        Param("X-Session-Id", "header", text, "The session (also read from "
              "X-OpenWebUI-Chat-Id or X-Conversation-Id). Absent: derived from a hash of the "
              "conversation's opening messages."),
        Param("X-Message-Id", "header", text, "The turn id when no Idempotency-Key is sent. "
              "Absent: derived from the user message's position and text."),
    )  # fmt: skip


def fast_asgi(handler: Callable[[Request], Awaitable[Response]]) -> ASGIHandler:
    """A request handler as an ASGI endpoint, for a route served from the fast lane (the
    adapters' turn routes: past the router's pattern walk and its exception middleware)."""

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        response = await handler(Request(scope, receive))
        await response(scope, receive, send)

    endpoint.__name__ = getattr(handler, "__name__", "endpoint")
    return endpoint


class ASGIEndpoint:
    """Marks a handler that speaks ASGI itself, so the router does not wrap it in a Request."""

    def __init__(self, handler: ASGIHandler) -> None:
        self.handler = handler
        self.__name__ = getattr(handler, "__name__", "endpoint")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(scope, receive, send)


class _RouteName:
    """What a router leaves in `scope["route"]`: the template, for spans and logs."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


def route_pattern(template: str) -> re.Pattern[str]:
    """`/v1/sessions/{session_id}/turns` -> a pattern whose groups are the parameters."""
    regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    return re.compile(regex)


class FastLane:
    """The table's `fast` routes, served ahead of the router (see the module's docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        endpoints: Sequence[Endpoint],
        handlers: Mapping[Any, ErrorHandler],
    ) -> None:
        self.app = app
        self.handlers = handlers
        self.endpoints = tuple(endpoints)
        fast = [ep for ep in endpoints if ep.fast]
        if any(not ep.asgi for ep in fast):
            raise ValueError("a fast route's handler must speak ASGI")
        self.http = [
            (ep.method, route_pattern(ep.path), _RouteName(ep.path), _asgi(ep))
            for ep in fast
            if not ep.websocket
        ]
        self.websocket = [
            (route_pattern(ep.path), _RouteName(ep.path), _asgi(ep)) for ep in fast if ep.websocket
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            for method, pattern, name, handler in self.http:
                if scope["method"] == method and (match := pattern.fullmatch(scope["path"])):
                    scope["path_params"] = match.groupdict()
                    scope["route"] = name
                    try:
                        await handler(scope, receive, send)
                    except Exception as exc:
                        await self._answer_error(scope, receive, send, exc)
                    return
            for pattern, name, _ in self.websocket:
                if match := pattern.fullmatch(scope["path"]):
                    scope["route"] = name
                    refusal: Exception
                    session_id = match.groupdict().get("session_id")
                    if session_id is not None and not ID_RE.fullmatch(session_id):
                        refusal = InvalidSessionId("the session id in the path is not valid")
                    elif scope["method"] == "GET":
                        # A WebSocket route asked without a handshake: say what it needs.
                        refusal = UpgradeRequired("this route is a WebSocket: connect with ws://")
                        refusal.headers = {"Upgrade": "websocket", "Connection": "Upgrade"}
                    else:  # a handshake is a GET
                        refusal = HTTPException(405, headers={"Allow": "GET"})
                    await self._answer_error(scope, receive, send, refusal)
                    return
        elif kind == "websocket":
            for pattern, name, handler in self.websocket:
                if match := pattern.fullmatch(scope["path"]):
                    scope["path_params"] = match.groupdict()
                    scope["route"] = name
                    await handler(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _answer_error(
        self, scope: Scope, receive: Receive, send: Send, exc: Exception
    ) -> None:
        handler = next((self.handlers[c] for c in type(exc).__mro__ if c in self.handlers), None)
        if handler is None:
            raise exc
        response = await handler(Request(scope, receive), exc)
        try:
            await response(scope, receive, send)
        except RuntimeError:
            # The response had already started (a stream that failed midway): too late for
            # an error answer; the client sees the stream end.
            log.warning("turn request failed after its answer started: %r", exc)


def _asgi(ep: Endpoint) -> ASGIHandler:
    """The handler of an endpoint marked `asgi` (it takes scope, receive, send)."""
    return cast(ASGIHandler, ep.handler)


class _ByMethod:
    """One path's handlers by method, as one ASGI app: Starlette answers a method a route
    lacks with 405 and that route's methods in `Allow`, so a path with several methods (GET
    and DELETE /v1/sessions/{session_id}) must be one route for `Allow` to list them all."""

    def __init__(self, handlers: Mapping[str, ASGIApp]) -> None:
        self.handlers = dict(handlers)
        if "GET" in self.handlers:
            self.handlers.setdefault("HEAD", self.handlers["GET"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The route checked the method against the same list.
        await self.handlers[scope["method"]](scope, receive, send)


def _http_app(ep: Endpoint) -> ASGIApp:
    if ep.asgi:
        return ASGIEndpoint(_asgi(ep))
    return request_response(cast(Callable[[Request], Awaitable[Response]], ep.handler))


def _routes(endpoints: Sequence[Endpoint]) -> list[BaseRoute]:
    """One route per path of the table (in its order), whatever the methods it has."""
    by_path: dict[str, list[Endpoint]] = {}
    for ep in endpoints:
        by_path.setdefault(ep.path, []).append(ep)
    routes: list[BaseRoute] = []
    for path, eps in by_path.items():
        if eps[0].websocket:
            routes.append(WebSocketRoute(path, ASGIEndpoint(_asgi(eps[0]))))
        elif len(eps) == 1:
            ep = eps[0]
            handler: Any = ASGIEndpoint(_asgi(ep)) if ep.asgi else ep.handler
            routes.append(Route(path, handler, methods=[ep.method]))
        else:
            by_method = _ByMethod({ep.method: _http_app(ep) for ep in eps})
            routes.append(Route(path, by_method, methods=[ep.method for ep in eps]))
    return routes


def build_web_app(
    endpoints: Sequence[Endpoint],
    *,
    handlers: Mapping[Any, ErrorHandler],
    lifespan: Lifespan,
    tracing: Tracing | None,
    title: str,
    version: str,
    cors_origins: Sequence[str] = (),
) -> Starlette:
    """The ASGI app serving `endpoints`, `/openapi.json` and `/docs`. Both documents are
    built on their first request (then kept): every start would otherwise pay for their
    JSON schemas, and most processes are never asked for them."""
    pages: dict[str, bytes] = {}

    async def openapi_json(request: Request) -> Response:
        if "openapi" not in pages:
            # Imported here: its schema generation is loaded only by a process asked for it.
            from agenthost.web.openapi import openapi_document

            pages["openapi"] = openapi_document(endpoints, title=title, version=version)
        return Response(pages["openapi"], media_type="application/json")

    async def docs_page(request: Request) -> Response:
        if "docs" not in pages:
            from agenthost.web.docs_page import docs_html  # as openapi_document above

            pages["docs"] = docs_html(endpoints, title=f"{title} API")
        return Response(pages["docs"], media_type="text/html")

    routes = _routes(endpoints)
    routes += [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs_page, methods=["GET"]),
    ]
    middleware = [
        Middleware(RequestContext, tracing=tracing),
        Middleware(FastLane, endpoints=endpoints, handlers=handlers),
    ]
    cors = cors_middleware(cors_origins)
    if cors is not None:
        middleware.insert(0, cors)  # outermost: preflights never reach a route
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=dict(handlers),
        middleware=middleware,
    )
