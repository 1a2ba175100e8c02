"""Bounds on a process's connections, so that idle, slow or countless clients cannot exhaust it.

A client must send a request's headers within `--header-timeout` of connecting (or of the first
byte of a next request on a kept-alive connection), and its body within `--body-timeout` of the
headers; past either it gets 408 and the connection is closed (slowloris). A kept-alive
connection idle between requests is closed after `--keep-alive-timeout` (uvicorn's own timer).
Past `--max-connections` open connections, a new one may still ask `/healthz`, `/readyz` or
`/metrics` (a probe must see the process alive and busy, not dead), while any other request
gets 503 `overloaded` with `Connection: close`; past that and a small reserve, a connection is
closed as soon as it is accepted. Every refusal counts in `agenthost_connections_refused_total`.

Start-up raises the file-descriptor soft limit to the hard one (each connection is one file),
and `--max-connections` is lowered to fit what the process may open, so that the process never
reaches "Too many open files", where even its probes stop answering.

The deadlines live in the HTTP protocol (`agenthost.runtime.lean_protocols.ConnectionGuard`);
this module holds their numbers and the ASGI gate that answers requests over the cap.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from agenthost.core.settings import Settings
from agenthost.observability.metrics import Metrics

__all__ = [
    "OVER_CAPACITY_KEY",
    "PROBE_PATHS",
    "ConnectionLimits",
    "OverCapacityGate",
    "raise_file_limit",
]

log = logging.getLogger("agenthost.server")

OVER_CAPACITY_KEY = "agenthost.over_capacity"
"""Set in a request's scope when its connection came in past --max-connections."""

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

PROBE_RESERVE = 64
"""Connections accepted past --max-connections for probes; beyond them, closed at once."""

_FILES_HELD = 256  # files a process holds besides its clients: logs, stores, Redis, modules
_OVERLOADED = (
    b'{"error":{"code":"overloaded","message":"this process has as many connections as it '
    b'takes (--max-connections); try again, or another process"}}'
)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The connection bounds of one process (see the module's docstring)."""

    header_timeout: float
    body_timeout: float
    keep_alive_timeout: float
    max_connections: int
    probe_header_timeout: float = 2.0  # a connection past the cap: a probe asks at once

    @classmethod
    def from_settings(cls, settings: Settings, file_limit: int) -> ConnectionLimits:
        """The settings' bounds, with `max_connections` lowered to fit `file_limit`."""
        fits = max(1, file_limit - _FILES_HELD - PROBE_RESERVE)
        if settings.max_connections > fits:
            log.warning(
                "--max-connections %d lowered to %d: the process may open %d files",
                settings.max_connections,
                fits,
                file_limit,
            )
        return cls(
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            keep_alive_timeout=settings.keep_alive_timeout,
            max_connections=min(settings.max_connections, fits),
            probe_header_timeout=min(2.0, settings.header_timeout),
        )

    def refuses_at_once(self, open_connections: int) -> bool:
        return open_connections > self.max_connections + PROBE_RESERVE

    def over_capacity(self, open_connections: int) -> bool:
        return open_connections > self.max_connections


def raise_file_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1_048_576)
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, hard, exc)
    return soft if soft != resource.RLIM_INFINITY else hard


class OverCapacityGate:
    """ASGI: a request on a connection that came in past --max-connections is served only if
    it is a probe; any other gets 503 `overloaded`, `Retry-After` and `Connection: close`."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope.get(OVER_CAPACITY_KEY)
            and scope["path"] not in PROBE_PATHS
        ):
            self.metrics.connection_refused("over_capacity")
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"%d" % len(_OVERLOADED)),
                        (b"retry-after", b"1"),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _OVERLOADED})
            return
        await self.app(scope, receive, send)
