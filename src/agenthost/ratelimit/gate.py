"""The turn gate in front of the engine: a turn enters if its tenant's limits allow it, and
leaves (freeing its in-flight slot) when it ends. 429s carry `Retry-After` and the IETF
`RateLimit-Policy` / `RateLimit` headers."""

from __future__ import annotations

import asyncio
import logging
import math

from agenthost.auth.principal import Principal
from agenthost.core.errors import AgentHostError, ConcurrencyLimited, RateLimited
from agenthost.observability.metrics import Metrics
from agenthost.ratelimit.base import Admission, TurnLimiter

__all__ = ["TurnGate", "rate_limit_headers", "slot"]

log = logging.getLogger("agenthost.ratelimit")


def slot(session_id: str, turn_id: str) -> str:
    """The in-flight slot a turn holds: one per running turn of the tenant. A turn id is
    unique only within its session (it is the client's Idempotency-Key), so the slot names
    both; a retry of the same turn on the same session keeps its slot. Ids hold no space."""
    return f"{session_id} {turn_id}"


def rate_limit_headers(principal: Principal, admission: Admission) -> dict[str, str]:
    limits = principal.limits
    headers: dict[str, str] = {}
    if limits.turns_per_minute > 0:
        headers["RateLimit-Policy"] = f'"turns";q={limits.turns_per_minute};w=60'
        reset = max(0, math.ceil(admission.reset_s))
        headers["RateLimit"] = f'"turns";r={admission.remaining};t={reset}'
    return headers


class TurnGate:
    def __init__(self, limiter: TurnLimiter, metrics: Metrics) -> None:
        self.limiter = limiter
        self.metrics = metrics
        self._releases: set[asyncio.Task[None]] = set()

    async def enter(self, principal: Principal, session_id: str, turn_id: str) -> None:
        """Admit the session's turn or raise RateLimited / ConcurrencyLimited (429)."""
        limits = principal.limits
        if limits.unlimited:
            return
        admission = await self.limiter.admit(principal.tenant, limits, slot(session_id, turn_id))
        if admission.allowed:
            return
        self.metrics.rate_limited()
        self.metrics.activity.rate_limited(principal.tenant)
        error: AgentHostError
        if admission.reason == "inflight":
            error = ConcurrencyLimited(
                f"this tenant already runs {limits.max_inflight} turns at once",
                retry_after=admission.retry_after_s,
            )
        else:
            error = RateLimited(
                f"this tenant may start {limits.turns_per_minute} turns a minute",
                retry_after=admission.retry_after_s,
            )
        error.headers = rate_limit_headers(principal, admission)
        raise error

    def leave(self, principal: Principal, session_id: str, turn_id: str) -> None:
        """The turn ended: free its in-flight slot (in the background)."""
        limits = principal.limits
        if limits.max_inflight <= 0:
            return
        held = slot(session_id, turn_id)
        if self.limiter.release_nowait(principal.tenant, limits, held):
            return
        task = asyncio.ensure_future(self.limiter.release(principal.tenant, limits, held))
        self._releases.add(task)
        task.add_done_callback(self._released)

    def _released(self, task: asyncio.Task[None]) -> None:
        self._releases.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not free an in-flight slot: %s", task.exception())
