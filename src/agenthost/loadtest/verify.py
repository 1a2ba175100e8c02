"""The verifier: reads every session's history back and holds it against what the server
acknowledged. Its counts are the report's headline; a broken server cannot pass it."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

import aiohttp
import msgspec

__all__ = ["Acked", "Verification", "check_session", "fetch_history", "verify"]


class Acked(msgspec.Struct, frozen=True):
    """A turn the server answered: its id, the message sent and the answer received."""

    turn_id: str
    message: str
    response: str


class Verification(msgspec.Struct):
    sessions: int = 0
    acknowledged: int = 0
    lost: int = 0  # acknowledged, not in the history
    duplicated: int = 0  # a turn's user message more than once
    out_of_order: int = 0  # acknowledged turns whose history order contradicts theirs
    mismatched: int = 0  # wrong user text, or not followed by its own answer
    unacknowledged_present: int = 0  # in the history though the client saw no answer
    unreadable: int = 0  # sessions whose history could not be read

    @property
    def clean(self) -> bool:
        return not (
            self.lost or self.duplicated or self.out_of_order or self.mismatched or self.unreadable
        )


def merge_verifications(parts: Sequence[Verification | None]) -> Verification | None:
    """The counts of several verifiers (client processes), added up; None if none ran."""
    ran = [v for v in parts if v is not None]
    if not ran:
        return None
    fields = Verification.__struct_fields__
    return Verification(**{f: sum(getattr(v, f) for v in ran) for f in fields})


def check_session(
    acked: Sequence[Acked], history: Sequence[dict[str, Any]], into: Verification
) -> None:
    """Count what is wrong with one session (`acked` in acknowledgement order)."""
    into.sessions += 1
    into.acknowledged += len(acked)
    users: dict[str, list[int]] = {}
    for i, m in enumerate(history):
        if m.get("role") == "user":
            users.setdefault(str(m.get("turn_id")), []).append(i)
    known = {a.turn_id for a in acked}
    into.unacknowledged_present += sum(1 for tid in users if tid not in known)
    positions = []
    for a in acked:
        found = users.get(a.turn_id)
        if not found:
            into.lost += 1
            continue
        into.duplicated += len(found) - 1
        i = found[0]
        positions.append(i)
        answer = history[i + 1] if i + 1 < len(history) else None
        if (
            history[i].get("content") != a.message
            or answer is None
            or answer.get("role") != "assistant"
            or answer.get("turn_id") != a.turn_id
            or answer.get("content") != a.response
        ):
            into.mismatched += 1
    into.out_of_order += sum(1 for x, y in itertools.pairwise(positions) if y < x)


async def fetch_history(
    http: aiohttp.ClientSession, base: str, sid: str, page: int = 1000
) -> list[dict[str, Any]] | None:
    """The whole history, oldest first, paging back with `before`; None if unreadable."""
    messages: list[dict[str, Any]] = []
    before: int | None = None
    for _ in range(10_000):  # bounded: 10 million messages
        query = f"?limit={page}" + ("" if before is None else f"&before={before}")
        try:
            async with http.get(f"{base}/v1/sessions/{sid}/messages{query}") as resp:
                if resp.status == 404:
                    return messages
                if resp.status != 200:
                    return None
                chunk = (await resp.json(content_type=None))["messages"]
        except (aiohttp.ClientError, TimeoutError, KeyError, ValueError):
            return None
        messages = chunk + messages
        if len(chunk) < page or not chunk:
            return messages
        before = int(chunk[0]["seq"])
    return None


async def verify(
    http: aiohttp.ClientSession, base: str, acked: dict[str, list[Acked]], concurrency: int = 32
) -> Verification:
    result = Verification()
    gate = asyncio.Semaphore(concurrency)

    async def one(sid: str, turns: list[Acked]) -> None:
        async with gate:
            history = await fetch_history(http, base, sid)
        if history is None:
            result.sessions += 1
            result.unreadable += 1
            return
        check_session(turns, history, result)

    await asyncio.gather(*(one(sid, turns) for sid, turns in acked.items()))
    return result
