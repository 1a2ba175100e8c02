"""Input limits: how long a message, how large and how deep metadata, how fast WebSocket frames.

Each exceeded limit raises its own error (`message_too_long`, `metadata_too_large`,
`metadata_too_deep`, `frame_rate_exceeded`), so a client learns which one it hit. Depth is
measured with an explicit stack, never by recursion, so hostile nesting cannot exhaust the
interpreter's stack; it is checked before size, so the size check never encodes deep input.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from agenthost.core.errors import (
    FrameRateExceeded,
    MessageTooLong,
    MetadataTooDeep,
    MetadataTooLarge,
)
from agenthost.core.settings import Settings

__all__ = ["FrameRateLimiter", "InputLimits", "metadata_depth"]

_encode = msgspec.json.encode
_NESTED = (dict, list, tuple)


def metadata_depth(value: Any, stop_after: int) -> int:
    """Nesting depth of dicts and lists in `value` (a scalar is 0, `{}` is 1), counted
    without recursion; the walk stops as soon as the depth exceeds `stop_after`."""
    deepest = 0
    if not isinstance(value, _NESTED):
        return 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        else:
            children = item
        deepest = max(deepest, level)
        if deepest > stop_after:
            return deepest
        stack.extend((child, level + 1) for child in children if isinstance(child, _NESTED))
    return deepest


@dataclass(frozen=True)
class InputLimits:
    """The limits on what one turn or session may carry."""

    max_message_chars: int = 32_000
    max_metadata_bytes: int = 16 * 1024
    max_metadata_depth: int = 8

    @classmethod
    def from_settings(cls, settings: Settings) -> InputLimits:
        return cls(
            settings.max_message_chars, settings.max_metadata_bytes, settings.max_metadata_depth
        )

    def check_message(self, message: str) -> None:
        if len(message) > self.max_message_chars:
            raise MessageTooLong(
                f"the message is {len(message)} characters; the limit is {self.max_message_chars}"
            )

    def check_metadata(self, metadata: Any) -> None:
        if not metadata:
            return
        depth = metadata_depth(metadata, self.max_metadata_depth)
        if depth > self.max_metadata_depth:
            raise MetadataTooDeep(f"metadata nests more than {self.max_metadata_depth} levels deep")
        size = len(_encode(metadata))
        if size > self.max_metadata_bytes:
            raise MetadataTooLarge(
                f"metadata is {size} bytes as JSON; the limit is {self.max_metadata_bytes}"
            )

    def check_turn(self, message: str, metadata: Any) -> None:
        """Raise the error of the first limit `message` or `metadata` exceeds."""
        self.check_message(message)
        self.check_metadata(metadata)


class FrameRateLimiter:
    """A token bucket: `rate` frames a second on average, bursts up to one second's worth."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self._tokens = self.capacity
        self._clock = clock
        self._last = clock()

    def take(self) -> None:
        """Spend one token for a frame just received; raise FrameRateExceeded when empty."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1.0:
            raise FrameRateExceeded(f"more than {self.rate:g} frames per second")
        self._tokens -= 1.0
