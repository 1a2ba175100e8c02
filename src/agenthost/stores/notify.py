"""In-process wake-ups for `wait_for_release`: waiters of a session are woken together.

Only sessions somebody waits on hold an entry, and an entry goes when its last waiter leaves,
so the map does not grow with the number of sessions.
"""

from __future__ import annotations

import asyncio

__all__ = ["ReleaseWaiters"]


class ReleaseWaiters:
    """Per-session events: `wait(sid, timeout)` returns at the next `wake(sid)` or timeout."""

    def __init__(self) -> None:
        self._events: dict[str, tuple[asyncio.Event, int]] = {}

    async def wait(self, session_id: str, timeout: float) -> None:
        event, count = self._events.get(session_id, (None, 0))
        if event is None:
            event = asyncio.Event()
        self._events[session_id] = (event, count + 1)
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            pass
        finally:
            current = self._events.get(session_id)
            if current is not None and current[0] is event:
                if current[1] <= 1:
                    del self._events[session_id]
                else:
                    self._events[session_id] = (event, current[1] - 1)

    def wake(self, session_id: str) -> None:
        entry = self._events.pop(session_id, None)
        if entry is not None:
            entry[0].set()

    def wake_all(self) -> None:
        for event, _ in self._events.values():
            event.set()
        self._events.clear()

    def __len__(self) -> int:
        return len(self._events)
