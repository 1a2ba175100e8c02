"""The ProcessRegistry contract, run against every backend in BACKENDS (conftest.py)."""

from __future__ import annotations

import asyncio
import time
import uuid

from agenthost.observability.activity import TurnSample
from agenthost.registry import (
    AutoscaleDecision,
    ProcessRecord,
    ProcessRegistry,
    Sample,
    create_registry,
)
from agenthost.registry.base import DECISIONS_KEPT


def record(started_at: float, **fields: object) -> ProcessRecord:
    return ProcessRecord(
        process_id=f"p-{uuid.uuid4().hex[:8]}",
        address="http://127.0.0.1:1",
        version="0.1.0",
        role="all",
        started_at=started_at,
        heartbeat_at=time.time(),
        **fields,  # type: ignore[arg-type]
    )


async def test_a_beat_is_listed_whole_and_replaced_by_the_next(
    registry: ProcessRegistry,
) -> None:
    first = record(
        100.0,
        inflight_turns=3,
        history=[Sample(1.0, 2.5, 3, 0.25)],
        recent_turns=[TurnSample(at=1.0, status="completed", seconds=0.5, tenant="acme")],
        rate_limited={"acme": 2},
    )
    await registry.beat(first, 30)
    assert await registry.processes() == [first]
    second = ProcessRecord(**{**_fields(first), "state": "draining", "draining": True})
    await registry.beat(second, 30)
    assert await registry.processes() == [second]


async def test_processes_are_listed_oldest_first(registry: ProcessRegistry) -> None:
    young, old = record(200.0), record(100.0)
    await registry.beat(young, 30)
    await registry.beat(old, 30)
    assert [r.process_id for r in await registry.processes()] == [
        old.process_id,
        young.process_id,
    ]


async def test_a_record_past_its_ttl_leaves_the_list(registry: ProcessRegistry) -> None:
    lasting, fleeting = record(1.0), record(2.0)
    await registry.beat(lasting, 30)
    await registry.beat(fleeting, 0.3)
    deadline = time.monotonic() + 10
    while fleeting.process_id in {r.process_id for r in await registry.processes()}:
        assert time.monotonic() < deadline, "the expired record stayed"
        await asyncio.sleep(0.05)
    assert [r.process_id for r in await registry.processes()] == [lasting.process_id]


async def test_remove_takes_a_process_off(registry: ProcessRegistry) -> None:
    kept, gone = record(1.0), record(2.0)
    await registry.beat(kept, 30)
    await registry.beat(gone, 30)
    await registry.remove(gone.process_id)
    await registry.remove("never-there")
    assert await registry.processes() == [kept]


async def test_decisions_newest_first_and_capped(registry: ProcessRegistry) -> None:
    for n in range(DECISIONS_KEPT + 5):
        await registry.add_decision(
            AutoscaleDecision(
                at=float(n),
                reason="scale_up",
                current=1,
                desired=2,
                inputs={"values": {"r1": 3.0}, "n": n},
            )
        )
    newest = await registry.decisions(3)
    assert [d.inputs["n"] for d in newest] == [DECISIONS_KEPT + 4, DECISIONS_KEPT + 3,
                                               DECISIONS_KEPT + 2]  # fmt: skip
    everything = await registry.decisions(1000)
    assert len(everything) == DECISIONS_KEPT
    assert everything[-1].inputs["n"] == 5


async def test_two_registries_on_one_store_see_each_other(
    registry: ProcessRegistry, registry_url: str
) -> None:
    """Another process's registry of the same store sees this one's beat (for SQLite: also
    one written through this process's store connection, `sqlite+store`)."""
    shared = not registry_url.startswith("memory")  # memory:// is one process's own
    other = create_registry(registry_url)
    await other.open()
    try:
        mine = record(1.0)
        await registry.beat(mine, 30)
        assert (mine.process_id in {r.process_id for r in await other.processes()}) == shared
        await registry.remove(mine.process_id)
    finally:
        await other.close()


def _fields(r: ProcessRecord) -> dict[str, object]:
    return {name: getattr(r, name) for name in r.__struct_fields__}
