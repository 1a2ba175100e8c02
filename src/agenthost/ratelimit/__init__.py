"""Per-tenant turn limits (rate by GCRA, and turns in flight), in-process or atomic in Redis."""

from __future__ import annotations

from agenthost.ratelimit.base import Admission, TurnLimiter, create_limiter

__all__ = ["Admission", "TurnLimiter", "create_limiter"]
