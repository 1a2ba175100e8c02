"""The turn limiter contract and its answer.

`admit` decides, in one step, whether a tenant may start a turn now: the rate (GCRA: each
turn pushes the tenant's theoretical arrival time on by 60/rate s; a turn is refused while
that time is more than `burst - 1` intervals ahead) and the turns it has in flight. An
admitted turn holds an in-flight slot until `release`; a slot of a process that died frees
itself after `hold_s`.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import msgspec

from agenthost.auth.principal import TenantLimits

__all__ = ["Admission", "TurnLimiter"]


class Admission(msgspec.Struct, frozen=True):
    """`allowed`, else why not (`rate` or `inflight`) and when to retry; `remaining` turns
    and `reset_s` (until the rate allowance is full again) for the RateLimit header."""

    allowed: bool
    reason: Literal["", "rate", "inflight"] = ""
    retry_after_s: float = 0.0
    remaining: int = 0
    reset_s: float = 0.0


@runtime_checkable
class TurnLimiter(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def admit(self, tenant: str, limits: TenantLimits, slot: str) -> Admission: ...

    async def release(self, tenant: str, limits: TenantLimits, slot: str) -> None: ...

    def release_nowait(self, tenant: str, limits: TenantLimits, slot: str) -> bool:
        """Free the slot without waiting, if the backend can; False means call `release`."""
        ...
