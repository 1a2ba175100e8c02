"""The dashboard's data: every live process of the fleet (from the process registry), the
local autoscaler's latest decisions, as one JSON answer or as a stream of them (SSE, one
`fleet` event per heartbeat interval). Admin token only; usable by scripts as well as by
/dashboard.

An SSE stream ends when this process starts draining, so an open dashboard never holds a
process that is on its way out; the page reconnects (through the load balancer, elsewhere).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from agenthost.core.errors import AgentHostError
from agenthost.registry import AutoscaleDecision, ProcessRecord, ProcessRegistry
from agenthost.web.admin import check_admin
from agenthost.web.error_responses import json_response

__all__ = ["DashboardRoutes", "FleetOut"]


class FleetOut(msgspec.Struct, kw_only=True):
    """The fleet now: its processes (oldest first), the autoscaler's newest decisions
    (newest first; empty without `agenthost cluster up --autoscale`), and for the page,
    the heartbeat interval and the Grafana link."""

    now: float
    interval_s: float
    processes: list[ProcessRecord]
    decisions: list[AutoscaleDecision]
    grafana_url: str
    log_content: bool
    served_by: str


_encode = msgspec.json.encode


class DashboardRoutes:
    def __init__(
        self,
        registry: ProcessRegistry,
        *,
        admin_token: str | None,
        interval: float,
        grafana_url: str,
        log_content: bool,
        process_id: str,
        draining: Callable[[], bool],
    ) -> None:
        self.registry = registry
        self.admin_token = admin_token
        self.interval = interval
        self.grafana_url = grafana_url
        self.log_content = log_content
        self.process_id = process_id
        self.draining = draining

    async def snapshot(self) -> FleetOut:
        return FleetOut(
            now=time.time(),
            interval_s=self.interval,
            processes=await self.registry.processes(),
            decisions=await self.registry.decisions(20),
            grafana_url=self.grafana_url,
            log_content=self.log_content,
            served_by=self.process_id,
        )

    async def fleet(self, request: Request) -> Response:
        check_admin(request, self.admin_token)
        return json_response(await self.snapshot())

    async def fleet_stream(self, request: Request) -> Response:
        check_admin(request, self.admin_token)
        first = await self.snapshot()  # a store that is down answers 503 before the stream
        return StreamingResponse(
            self._events(first),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _events(self, first: FleetOut) -> AsyncIterator[bytes]:
        snapshot: FleetOut | None = first
        while True:
            if snapshot is not None:
                yield b"event: fleet\ndata: " + _encode(snapshot) + b"\n\n"
            else:
                yield b": the process registry is unreachable; trying again\n\n"
            if self.draining():
                yield b'event: end\ndata: {"reason":"draining"}\n\n'
                return
            await asyncio.sleep(self.interval)
            try:
                snapshot = await self.snapshot()
            except AgentHostError:
                snapshot = None
