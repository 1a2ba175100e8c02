"""The two routes every turn takes, served straight from the middleware stack.

`POST /v1/sessions/{id}/turns` and `WS /v1/sessions/{id}/ws` skip Starlette's router (which
would try each route's pattern in turn) and its exception middleware: per turn that is a few
regex matches and two coroutine frames less, and an open WebSocket holds none of those frames
while it idles. Errors are answered by the same handlers the app registers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

if TYPE_CHECKING:
    from agenthost.app import API

__all__ = ["HotRoutes"]

log = logging.getLogger("agenthost.app")

_TURNS = re.compile(r"/v1/sessions/([^/]+)/turns")
_WEBSOCKET = re.compile(r"/v1/sessions/([^/]+)/ws")

ErrorHandler = Callable[[Request, Exception], Awaitable[Any]]


class _RouteName:
    """What a router would leave in `scope["route"]`: the template, for spans and logs."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


_TURNS_ROUTE = _RouteName("/v1/sessions/{session_id}/turns")
_WEBSOCKET_ROUTE = _RouteName("/v1/sessions/{session_id}/ws")


class HotRoutes:
    def __init__(self, app: ASGIApp, *, api: API, handlers: Mapping[Any, ErrorHandler]) -> None:
        self.app = app
        self.api = api
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if scope["method"] == "POST" and (match := _TURNS.fullmatch(scope["path"])):
                scope["path_params"] = {"session_id": match[1]}
                scope["route"] = _TURNS_ROUTE
                try:
                    await self.api.post_turn(scope, receive, send)
                except Exception as exc:
                    await self._answer_error(scope, receive, send, exc)
                return
        elif kind == "websocket" and (match := _WEBSOCKET.fullmatch(scope["path"])):
            scope["path_params"] = {"session_id": match[1]}
            scope["route"] = _WEBSOCKET_ROUTE
            await self.api.websocket(WebSocket(scope, receive, send), send)
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
