"""The process's own routes: liveness, readiness (503 while draining or when the store is
unreachable), Prometheus metrics and the admin drain. Admin routes need the admin token and
are off without one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from agenthost.core.errors import AgentHostError
from agenthost.observability.metrics import Metrics
from agenthost.stores.base import SessionStore
from agenthost.turns.drain import Drain
from agenthost.web.admin import check_admin
from agenthost.web.error_responses import json_response
from agenthost.web.schemas import Health

__all__ = ["ProcessRoutes"]


class ProcessRoutes:
    def __init__(
        self,
        store: SessionStore,
        drain: Drain,
        metrics: Metrics,
        *,
        admin_token: str | None,
        metrics_require_admin: bool,
        export: Callable[[], Awaitable[bytes]] | None = None,
    ) -> None:
        """`export` renders /metrics when it covers more than this process (a `--workers`
        group); by default this process's metrics."""
        self.store = store
        self.drain = drain
        self.process_metrics = metrics
        self.admin_token = admin_token
        self.metrics_require_admin = metrics_require_admin
        self.export = export

    async def healthz(self, request: Request) -> Response:
        return json_response(Health("ok"))

    async def readyz(self, request: Request) -> Response:
        if self.drain.engine.draining:
            return json_response(Health("draining"), 503)
        try:
            await self.store.ping()
        except AgentHostError:
            return json_response(Health("store_unavailable"), 503)
        return json_response(Health("ready"))

    async def admin_drain(self, request: Request) -> Response:
        self._check_admin(request)
        self.drain.start("POST /admin/drain")
        return json_response(Health("draining"), 202)

    async def metrics(self, request: Request) -> Response:
        if self.metrics_require_admin:
            self._check_admin(request)
        text = await self.export() if self.export else self.process_metrics.render()
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    def _check_admin(self, request: Request) -> None:
        check_admin(request, self.admin_token)
