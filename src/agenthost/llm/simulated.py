"""The simulated model: a deterministic answer to a prompt, and the pace it arrives at.

Shared by the in-process `sim://` client and the `agenthost llm-sim` HTTP server. The answer
is `sim: <last user message> | <words derived from a hash of the whole prompt>`, so a test
(or the load-test verifier) can tell which turn an answer belongs to.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import msgspec

__all__ = ["SimSettings", "SimulatedModel", "answer_for", "settings_from_url", "split_tokens"]

_WORDS = [
    *("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"),
    *("juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo"),
    *("sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu"),
]


class SimSettings(msgspec.Struct, kw_only=True):
    """How the simulated model behaves. Latencies in milliseconds; `latency_ms` is the total
    time of a non-streamed answer; streams start after `ttft_ms` then pace at `tokens_per_s`
    (0 = no pacing)."""

    latency_ms: float = 0.0
    ttft_ms: float = 0.0
    tokens_per_s: float = 0.0
    error_rate: float = 0.0
    seed: int = 0
    words: int = 8
    model: str = "agenthost-sim"

    def __post_init__(self) -> None:
        if min(self.latency_ms, self.ttft_ms, self.tokens_per_s) < 0:
            raise ValueError("sim latencies and tokens_per_s must be >= 0")
        if not 0 <= self.error_rate <= 1:
            raise ValueError("sim error_rate must be between 0 and 1")
        if self.words < 0:
            raise ValueError("sim words must be >= 0")


def settings_from_url(url: str) -> SimSettings:
    """`sim://?latency_ms=2000&tokens_per_s=50` → SimSettings; ValueError names a bad key."""
    parts = urlsplit(url)
    if parts.scheme != "sim":
        raise ValueError(f"not a sim:// URL: {url!r}")
    raw: dict[str, Any] = dict(parse_qsl(parts.query, keep_blank_values=False))
    unknown = set(raw) - set(SimSettings.__struct_fields__)
    if unknown:
        raise ValueError(
            f"unknown sim:// option(s) {sorted(unknown)}; known: "
            + ", ".join(SimSettings.__struct_fields__)
        )
    try:
        return msgspec.convert(raw, SimSettings, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"bad sim:// option: {exc}") from None


def _last_user(messages: Sequence[Mapping[str, str]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message.get("content", "")
    return ""


def answer_for(messages: Sequence[Mapping[str, str]], words: int = 8, seed: int = 0) -> str:
    """The deterministic answer to `messages`."""
    last = _last_user(messages)
    if words == 0:
        return f"sim: {last}"
    # One update over the joined prompt: the hash is over roles and contents, in order.
    joined = "\x01".join(f"{m.get('role', '')}\x00{m.get('content', '')}" for m in messages)
    digest = hashlib.blake2b(joined.encode(), digest_size=32, key=seed.to_bytes(8, "little"))
    raw = digest.digest()
    tail = " ".join(_WORDS[raw[i % len(raw)] % len(_WORDS)] for i in range(words))
    return f"sim: {last} | {tail}"


class SimulatedError(Exception):
    """An injected failure (the `error_rate`)."""


class SimulatedModel:
    """Produces answers at the configured pace; injects failures at `error_rate`."""

    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self._rng = random.Random(settings.seed)

    def should_fail(self) -> bool:
        rate = self.settings.error_rate
        return rate > 0 and self._rng.random() < rate

    async def complete(self, messages: Sequence[Mapping[str, str]]) -> str:
        s = self.settings
        if self.should_fail():
            raise SimulatedError("simulated upstream error")
        if s.latency_ms > 0:
            await asyncio.sleep(s.latency_ms / 1000)
        return answer_for(messages, s.words, s.seed)

    async def stream(self, messages: Sequence[Mapping[str, str]]) -> AsyncIterator[str]:
        s = self.settings
        if self.should_fail():
            raise SimulatedError("simulated upstream error")
        text = answer_for(messages, s.words, s.seed)
        tokens = split_tokens(text)
        start = time.monotonic()
        if s.ttft_ms > 0:
            await asyncio.sleep(s.ttft_ms / 1000)
        for i, token in enumerate(tokens):
            if s.tokens_per_s > 0 and i:
                # Pace against the start, not the previous token, so drift cannot build up.
                due = start + s.ttft_ms / 1000 + i / s.tokens_per_s
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            yield token


def split_tokens(text: str) -> list[str]:
    """Split into word-ish tokens that join back to `text` exactly."""
    out: list[str] = []
    for i, word in enumerate(text.split(" ")):
        out.append(word if i == 0 else " " + word)
    return out
