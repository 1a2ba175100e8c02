"""Each session's history window, kept by the process that ran the session's last turn, so
its next turn reads only what is new from the store (normally nothing).

A cached window is valid for one incarnation of a session (`WindowMark.created_at`) up to a
message count; the store checks both when the turn begins and answers with the messages
after the mark (`Started.delta`), or with the whole window when the mark is not of this
session any more (deleted and started again, expired). Messages are only ever appended, so
a valid mark plus what came after it is exactly the window. Turns of a session served by
another process in between simply arrive as the delta.

Measured with 1 KB messages at history 200, window 50, on Redis: reading and decoding the
window every turn cost about twice a turn at history 5; with the cache the two cost the same
(docs/benchmarks.md). Bounded by the bytes of the messages held, least recently used first
out; 0 turns it off.
"""

from __future__ import annotations

from collections import OrderedDict

from agenthost.stores.base import Message, Started, WindowMark

__all__ = ["CachedWindow", "WindowCache"]

_MESSAGE_OVERHEAD = 200  # bytes a Message costs beyond its content (object, strings, floats)


class CachedWindow:
    """A session's newest messages, all of them before `mark.count`."""

    __slots__ = ("mark", "messages", "size")

    def __init__(self, mark: WindowMark, messages: tuple[Message, ...]) -> None:
        self.mark = mark
        self.messages = messages
        self.size = sum(len(m.content) for m in messages) + _MESSAGE_OVERHEAD * len(messages)


class WindowCache:
    """Windows by session id, at most `max_bytes` of messages in all."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.hits = 0
        self.misses = 0
        self._windows: OrderedDict[str, CachedWindow] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    def get(self, session_id: str) -> CachedWindow | None:
        """The session's cached window, if any (its mark goes to `begin_turn`)."""
        cached = self._windows.get(session_id)
        if cached is not None:
            self._windows.move_to_end(session_id)
        return cached

    def window(self, cached: CachedWindow | None, started: Started, size: int) -> list[Message]:
        """The window to hand the agent: the store's answer, after what `cached` holds when
        the store answered with only the newer messages."""
        if not started.delta or cached is None:
            self.misses += 1
            return started.history
        self.hits += 1
        if not started.history:
            return list(cached.messages[-size:]) if size > 0 else []
        joined = list(cached.messages) + started.history
        return joined[-size:] if size > 0 else []

    def put(
        self, session_id: str, created_at: float, count: int, messages: list[Message], size: int
    ) -> None:
        """Keep the newest `size` of `messages`, the session's history up to `count`."""
        if self.max_bytes <= 0 or size <= 0 or created_at == 0.0:
            return  # off, no window, or a store that names no incarnation
        entry = CachedWindow(WindowMark(created_at, count), tuple(messages[-size:]))
        self.drop(session_id)
        if entry.size > self.max_bytes:
            return
        self._windows[session_id] = entry
        self.size += entry.size
        while self.size > self.max_bytes:
            _, evicted = self._windows.popitem(last=False)
            self.size -= evicted.size

    def drop(self, session_id: str) -> None:
        old = self._windows.pop(session_id, None)
        if old is not None:
            self.size -= old.size
