"""What a load test does: how many sessions, how many turns, at what pace, over which mode."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["Background", "ClientKind", "LoadConfig", "Mode"]

Mode = Literal["http", "sse", "ws"]
Background = Literal["off", "poll", "stream"]
ClientKind = Literal["lean", "aiohttp"]


class LoadConfig(msgspec.Struct, kw_only=True):
    """One load test; validated on construction."""

    url: str
    mode: Mode = "http"
    background: Background = "off"
    """`poll` or `stream`: every turn is a background turn (202), whose answer is read by
    polling GET .../turns/{id} or from its stream; `mode` is then not used."""
    client: ClientKind = "lean"
    """`lean`: `--mode http` turns to an http:// URL go over agenthost's own keep-alive
    client (`agenthost.loadtest.lean_http`), the rest over aiohttp; `aiohttp`: all of them."""
    sessions: int = 100
    turns: int = 3
    duration: float | None = None  # seconds; when set, sessions send turns until it ends
    think: float = 0.0  # mean seconds between a session's turns (uniform +-50%)
    ramp: float = 0.0  # seconds over which sessions start
    on_busy: Literal["reject", "enqueue", "interrupt"] = "enqueue"
    payload_bytes: int = 0
    api_key: str | None = None
    max_retries: int = 8
    request_timeout: float = 120.0
    verify: bool = True
    seed: int = 0
    session_prefix: str = "lt"

    def __post_init__(self) -> None:
        problems = []
        if not self.url.startswith(("http://", "https://")):
            problems.append("url must start with http:// or https://")
        if self.sessions < 1:
            problems.append("sessions must be >= 1")
        if self.turns < 1 and self.duration is None:
            problems.append("turns must be >= 1 (or give a duration)")
        if self.duration is not None and self.duration <= 0:
            problems.append("duration must be > 0")
        if self.think < 0 or self.ramp < 0 or self.payload_bytes < 0:
            problems.append("think, ramp and payload_bytes must be >= 0")
        if self.background not in ("off", "poll", "stream"):
            problems.append("background must be off, poll or stream")
        if self.client not in ("lean", "aiohttp"):
            problems.append("client must be lean or aiohttp")
        if self.max_retries < 0:
            problems.append("max_retries must be >= 0")
        if problems:
            raise ValueError("; ".join(problems))
        self.url = self.url.rstrip("/")
