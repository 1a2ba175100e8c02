"""Redis commands that one part of a process hands another to run in its own step: the
work queue's acknowledgement and the broker's turn ending, run by the session store in a
commit's script (`SessionStore.commit_turn`'s `then`), so a queued turn's end costs one
round trip, not one per part."""

from __future__ import annotations

from typing import Any

__all__ = ["IF_ZERO", "Command"]

Command = tuple[Any, ...]
"""A Redis command and its arguments; one that starts with `IF_ZERO` runs only if the
command before it replied 0."""

IF_ZERO = "if-zero"
