"""What a route is: its method and path, its handler, and what it takes and returns. The
route table (`agenthost.web.routes`) is a list of these; routing, the OpenAPI document and
the Kubernetes checks are all derived from it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["Endpoint", "Handler", "Param"]

Handler = Callable[[Request], Awaitable[Response]] | Callable[..., Awaitable[None]]
"""A Starlette request handler, or an ASGI endpoint (scope, receive, send)."""


@dataclass(frozen=True)
class Param:
    """A query or header parameter."""

    name: str
    where: str  # "query" | "header" | "path"
    schema: dict[str, Any]
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Endpoint:
    """One route: what the handler takes and returns, for routing and for the document.

    `websocket`: a WebSocket route (`method` is GET, the handshake's); `asgi`: the handler
    speaks ASGI itself (scope, receive, send) rather than taking a Request; `fast`: served
    straight from the middleware stack, ahead of the router (the routes every turn takes)."""

    method: str
    path: str
    handler: Handler
    summary: str
    body: Any = None  # a msgspec type (or a union of tagged ones), or None
    response: Any = None
    status: int = 200
    errors: tuple[int, ...] = ()
    params: tuple[Param, ...] = ()
    streams: bool = False
    # What the event stream's events are: agenthost's turn events, a client protocol's own
    # (`data:` lines, named by the protocol if at all) or the fleet's heartbeats.
    events: Literal["turn", "protocol", "fleet"] = "turn"
    tags: tuple[str, ...] = ("sessions",)
    extra: dict[str, Any] = field(default_factory=dict)
    websocket: bool = False
    asgi: bool = False
    fast: bool = False
