"""In-process wake-ups for `wait_for_release`: waiters of a session are woken together.

Only sessions somebody waits on hold an entry, and an entry goes when its last waiter leaves,
so the map does not grow with the number of sessions.
"""

from __future__ import annotations

import asyncio

__all__ = ["ReleaseWaiters"]


class ReleaseWaiters:
    """Per-session events: `wait(sid, timeout)` returns at the next `wake(sid)` or timeout.

    `register` / `unregister` split the wait for callers that must do something (subscribe,
    re-check) between registering and waiting, so no wake-up in between is missed.
    """

    def __init__(self) -> None:
        self._events: dict[str, tuple[asyncio.Event, int]] = {}

    def register(self, session_id: str) -> tuple[asyncio.Event, bool]:
        """The session's event, and whether this is its first waiter."""
        event, count = self._events.get(session_id, (None, 0))
        first = event is None
        if event is None:
            event = asyncio.Event()
        self._events[session_id] = (event, count + 1)
        return event, first

    def unregister(self, session_id: str, event: asyncio.Event) -> bool:
        """Drop one waiter; True if it was the session's last."""
        current = self._events.get(session_id)
        if current is None or current[0] is not event:
            return not self.waiting(session_id)
        if current[1] <= 1:
            del self._events[session_id]
            return True
        self._events[session_id] = (event, current[1] - 1)
        return False

    async def wait(self, session_id: str, timeout: float) -> None:
        event, _ = self.register(session_id)
        try:
            await wait_event(event, timeout)
        finally:
            self.unregister(session_id, event)

    def waiting(self, session_id: str) -> bool:
        return session_id in self._events

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


async def wait_event(event: asyncio.Event, timeout: float) -> None:
    """Wait for `event` at most `timeout` seconds; a timeout is not an error."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        pass
