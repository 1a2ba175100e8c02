"""The in-process turn limiter (embedded default): the same GCRA as the Redis script."""

from __future__ import annotations

import math
import time

from agenthost.auth.principal import TenantLimits
from agenthost.ratelimit.base import Admission

__all__ = ["MemoryLimiter", "gcra"]


def gcra(tat: float, now: float, limits: TenantLimits) -> tuple[Admission, float]:
    """One GCRA decision at `now` (seconds) given the tenant's theoretical arrival time
    `tat`: the admission and the new `tat` (unchanged when refused)."""
    interval = 60.0 / limits.turns_per_minute
    tat = max(tat, now)
    allow_at = tat - interval * (limits.burst - 1)
    if allow_at > now:
        return Admission(False, "rate", allow_at - now, 0, tat - now), tat
    new_tat = tat + interval
    remaining = math.floor((now + interval * limits.burst - new_tat) / interval + 1e-9)
    return Admission(True, "", 0.0, max(remaining, 0), new_tat - now), new_tat


class MemoryLimiter:
    def __init__(self, *, hold_s: float) -> None:
        self.hold_s = hold_s
        self._tat: dict[str, float] = {}
        self._inflight: dict[str, dict[str, float]] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def admit(self, tenant: str, limits: TenantLimits, slot: str) -> Admission:
        now = time.monotonic()
        admission = Admission(True)
        new_tat = None
        if limits.turns_per_minute > 0:
            admission, new_tat = gcra(self._tat.get(tenant, now), now, limits)
            if not admission.allowed:
                return admission
        if limits.max_inflight > 0:
            slots = self._inflight.setdefault(tenant, {})
            for held, expires in list(slots.items()):
                if expires <= now:
                    del slots[held]
            if len(slots) >= limits.max_inflight and slot not in slots:
                return Admission(False, "inflight", 1.0)
            slots[slot] = now + self.hold_s
        if new_tat is not None:
            self._tat[tenant] = new_tat
        return admission

    async def release(self, tenant: str, limits: TenantLimits, slot: str) -> None:
        self.release_nowait(tenant, limits, slot)

    def release_nowait(self, tenant: str, limits: TenantLimits, slot: str) -> bool:
        if limits.max_inflight > 0:
            self._inflight.get(tenant, {}).pop(slot, None)
        return True
