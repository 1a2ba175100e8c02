"""Nothing lost, nothing twice: simultaneous turns of one session against a real server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp

from tests.fixtures.agenthost import AgentHostProcess

SESSIONS = 200


async def two_simultaneous_turns(
    http: aiohttp.ClientSession, url: str, session_id: str
) -> list[tuple[str, str, str]]:
    """Send two turns of one session at the same instant; return the acknowledged ones as
    (turn_id, message, response)."""

    async def one(n: int) -> tuple[str, str, str] | None:
        turn_id = f"{session_id}-t{n}"
        message = f"message {n} of {session_id}"
        async with http.post(
            f"{url}/v1/sessions/{session_id}/turns",
            json={"message": message, "on_busy": "enqueue"},
            headers={"Idempotency-Key": turn_id},
        ) as resp:
            if resp.status != 200:
                return None
            body: dict[str, Any] = await resp.json()
            assert body["turn_id"] == turn_id
            return (turn_id, message, body["response"])

    results = await asyncio.gather(one(0), one(1))
    return [r for r in results if r is not None]


async def history(http: aiohttp.ClientSession, url: str, session_id: str) -> list[dict[str, Any]]:
    async with http.get(f"{url}/v1/sessions/{session_id}/messages?limit=1000") as resp:
        assert resp.status == 200
        messages: list[dict[str, Any]] = (await resp.json())["messages"]
        return messages


async def test_two_simultaneous_turns_per_session_are_all_kept_once_in_order(
    agenthost_factory: Callable[..., AgentHostProcess],
) -> None:
    server = agenthost_factory(llm="sim://?latency_ms=30")
    connector = aiohttp.TCPConnector(limit=2 * SESSIONS)
    async with aiohttp.ClientSession(connector=connector) as http:
        sessions = [f"conc-{i}" for i in range(SESSIONS)]
        acked = await asyncio.gather(
            *(two_simultaneous_turns(http, server.url, s) for s in sessions)
        )
        assert sum(len(a) for a in acked) == 2 * SESSIONS, "enqueue answers both turns"
        for session_id, turns in zip(sessions, acked, strict=True):
            messages = await history(http, server.url, session_id)
            assert [m["seq"] for m in messages] == list(range(len(messages)))
            # Pairs in commit order: each user message followed by its own answer.
            assert len(messages) == 4
            pairs = [(messages[i], messages[i + 1]) for i in range(0, len(messages), 2)]
            seen = []
            for user, assistant in pairs:
                assert (user["role"], assistant["role"]) == ("user", "assistant")
                assert user["turn_id"] == assistant["turn_id"]
                seen.append((user["turn_id"], user["content"], assistant["content"]))
            assert sorted(seen) == sorted(turns), f"history of {session_id} != acknowledged"
            assert len({t for t, _, _ in seen}) == len(seen), "a turn appears twice"
