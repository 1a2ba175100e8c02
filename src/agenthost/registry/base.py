"""The process registry: every server process writes a record of itself (a heartbeat) into
the fleet's shared store, so any process can show the whole fleet on `/dashboard`.

A record lives for its TTL (a few heartbeats): a process that dies without a word leaves
the list by itself. A process that stops cleanly writes a last record that says so, kept
briefly so the dashboard shows it leave. The local fleet's autoscaler appends its decisions,
with their inputs, to the same registry.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from agenthost.observability.activity import TurnSample

__all__ = [
    "DECISIONS_KEPT",
    "AutoscaleDecision",
    "ProcessRecord",
    "ProcessRegistry",
    "Sample",
    "decode_decision",
    "decode_record",
    "encode",
    "order",
]

DECISIONS_KEPT = 100
"""Autoscaler decisions a registry keeps (the newest)."""


class Sample(msgspec.Struct, array_like=True):
    """One point of a process's recent history: when, turns/s, in-flight turns, p99 (s)."""

    at: float
    turns_per_s: float
    inflight_turns: int
    p99_s: float | None


class ProcessRecord(msgspec.Struct, kw_only=True):
    """A process as its last heartbeat described it."""

    process_id: str
    address: str
    version: str
    role: str
    started_at: float
    heartbeat_at: float
    state: str = "ready"
    """ready, draining or stopped."""
    draining: bool = False
    active_connections: int = 0
    inflight_turns: int = 0
    turns_per_s: float = 0.0
    p99_s: float | None = None
    cpu_percent: float = 0.0
    rss_bytes: int = 0
    turns_total: int = 0
    history: list[Sample] = []
    recent_turns: list[TurnSample] = []
    rate_limited: dict[str, int] = {}
    """Rate-limit refusals by tenant since the process started."""


class AutoscaleDecision(msgspec.Struct, kw_only=True):
    """One evaluation of the local fleet's autoscaler, with what it was based on."""

    at: float
    reason: str
    current: int
    desired: int
    inputs: dict[str, Any] = {}


encode = msgspec.json.encode
decode_record = msgspec.json.Decoder(ProcessRecord).decode
decode_decision = msgspec.json.Decoder(AutoscaleDecision).decode


class ProcessRegistry(Protocol):
    """Where processes announce themselves. Every method may raise StoreUnavailable."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def beat(self, record: ProcessRecord, ttl_s: float) -> None:
        """Write `record` (replacing the process's previous one), kept for `ttl_s`."""
        ...

    async def remove(self, process_id: str) -> None: ...

    async def processes(self) -> list[ProcessRecord]:
        """Every record not yet expired, oldest process first."""
        ...

    async def add_decision(self, decision: AutoscaleDecision) -> None:
        """Append an autoscaler decision (the newest DECISIONS_KEPT are kept)."""
        ...

    async def decisions(self, limit: int = 20) -> list[AutoscaleDecision]:
        """The newest `limit` decisions, newest first."""
        ...


def order(records: list[ProcessRecord]) -> list[ProcessRecord]:
    """Records in the order a registry answers: oldest process first."""
    return sorted(records, key=lambda r: (r.started_at, r.process_id))
