"""`memory://`: this process's own registry (tests, a single process)."""

from __future__ import annotations

import time

from agenthost.registry.base import (
    DECISIONS_KEPT,
    AutoscaleDecision,
    ProcessRecord,
    order,
)

__all__ = ["MemoryRegistry"]


class MemoryRegistry:
    def __init__(self) -> None:
        self._records: dict[str, tuple[float, ProcessRecord]] = {}
        self._decisions: list[AutoscaleDecision] = []

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def beat(self, record: ProcessRecord, ttl_s: float) -> None:
        self._records[record.process_id] = (time.time() + ttl_s, record)

    async def remove(self, process_id: str) -> None:
        self._records.pop(process_id, None)

    async def processes(self) -> list[ProcessRecord]:
        now = time.time()
        for pid in [p for p, (expires, _) in self._records.items() if expires <= now]:
            del self._records[pid]
        return order([record for _, record in self._records.values()])

    async def add_decision(self, decision: AutoscaleDecision) -> None:
        self._decisions.append(decision)
        del self._decisions[:-DECISIONS_KEPT]

    async def decisions(self, limit: int = 20) -> list[AutoscaleDecision]:
        return self._decisions[::-1][:limit]
