"""The simulated model shared by the in-process `sim://` client and `agenthost llm-sim`.

Its answer is `sim: <last user message> | <words from a keyed hash of the whole prompt>`
(with `| tool: <results>` after the message once tools answered since it: `sim_tools.py`): the
same messages and seed always give the same answer, and a test (or the load-test verifier)
can tell which turn an answer belongs to. Injected failures are `LLMError`s, drawn from a
seeded generator (`error_rate`) or asked for by model name (`error-429`, `error-503-x2`, ...).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import msgspec

from agenthost.llm.errors import LLMError, LLMRateLimited, LLMTimeout, LLMUpstreamError
from agenthost.llm.sim_pacing import TICK_S, ticker

__all__ = [
    "DEFAULT_SIM_MODEL",
    "Answerer",
    "Fault",
    "SimSettings",
    "SimulatedModel",
    "answer_for",
    "answerer_for",
    "parse_fault",
    "settings_from_url",
    "split_tokens",
]

DEFAULT_SIM_MODEL = "agenthost-sim"

_WORDS = (
    *("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"),
    *("juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo"),
    *("sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu"),
)
# A word per byte value, so turning a digest into words is one lookup per word.
_BYTE_WORDS = tuple(_WORDS[b % len(_WORDS)] for b in range(256))
_MAX_DIGEST = 64  # blake2b's largest digest; longer answers reuse its bytes, shifted


class SimSettings(msgspec.Struct, kw_only=True, frozen=True):
    """How the simulated model behaves; times in milliseconds.

    - `latency_ms`: total time of a non-streamed answer. When 0, a non-streamed answer takes
      as long as its stream would (`ttft_ms` + tokens at `tokens_per_s`); all 0 = instant.
    - `ttft_ms`, `tokens_per_s`: a stream's first token, then its pace (0 = no pacing). When
      both are 0, a stream's first token comes after `latency_ms`, so `sim://?latency_ms=2000`
      is a 2 s model streamed or not.
    - `error_rate`: share of requests failed with a simulated 503, drawn from `seed`.
    - `seed`: keys the answer's hash and seeds the failure draws.
    - `words`: words appended to each answer after the echoed message.
    - `retry_after_ms`: the Retry-After sent with simulated 429s and 503s.
    - `model`: the model's name (`/v1/models`); an `error-...` name injects that failure.
    """

    latency_ms: float = 0.0
    ttft_ms: float = 0.0
    tokens_per_s: float = 0.0
    error_rate: float = 0.0
    seed: int = 0
    words: int = 8
    retry_after_ms: float = 1000.0
    model: str = DEFAULT_SIM_MODEL

    def __post_init__(self) -> None:
        times = (self.latency_ms, self.ttft_ms, self.tokens_per_s, self.retry_after_ms)
        if not all(math.isfinite(t) and t >= 0 for t in times):
            raise ValueError(
                "sim latency_ms, ttft_ms, tokens_per_s and retry_after_ms must be >= 0"
            )
        if not 0 <= self.error_rate <= 1:
            raise ValueError(f"sim error_rate must be between 0 and 1, not {self.error_rate}")
        if not 0 <= self.words <= 100_000:
            raise ValueError(f"sim words must be between 0 and 100000, not {self.words}")
        if not -(2**63) <= self.seed < 2**63:
            raise ValueError("sim seed must fit in 64 bits")
        if not self.model:
            raise ValueError("sim model must not be empty")


def settings_from_url(url: str) -> SimSettings:
    """`sim://?latency_ms=2000&tokens_per_s=50` → SimSettings; ValueError names a bad key
    or value. `sim://` alone is an instant, never-failing model."""
    parts = urlsplit(url)
    if parts.scheme != "sim":
        raise ValueError(f"not a sim:// URL: {url!r}")
    if parts.netloc or parts.path not in ("", "/"):
        raise ValueError(f"a sim:// URL takes only ?options, not a host or path: {url!r}")
    raw: dict[str, Any] = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = set(raw) - set(SimSettings.__struct_fields__)
    if unknown:
        raise ValueError(
            f"unknown sim:// option(s) {sorted(unknown)}; known: "
            + ", ".join(SimSettings.__struct_fields__)
        )
    try:
        return msgspec.convert(raw, SimSettings, strict=False)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ValueError(f"bad sim:// option in {url!r}: {exc}") from None


def split_tokens(text: str) -> list[str]:
    """Word-ish tokens (`"sim:"`, `" hello"`, ...) that join back to `text` exactly."""
    words = text.split(" ")
    return [words[0], *(" " + w for w in words[1:])]


class Fault(msgspec.Struct, frozen=True):
    """A failure asked for by model name: `error-<kind>` always, `error-<kind>-x<times>`
    for the first `times` requests of each prompt (then it answers normally)."""

    kind: str
    """"429", "500", "502", "503" or "timeout"."""
    times: int | None = None


_FAULT_NAME = re.compile(r"error-(429|500|502|503|timeout)(?:-x(\d{1,6}))?")


@lru_cache(maxsize=256)
def parse_fault(model: str) -> Fault | None:
    """The failure a model name asks for, if it is one of `error-...`."""
    match = _FAULT_NAME.fullmatch(model)
    if match is None:
        return None
    kind, times = match.groups()
    return Fault(kind, int(times) if times else None)


def _fault_error(kind: str, retry_after_s: float) -> LLMError:
    if kind == "429":
        return LLMRateLimited(
            "rate limited (simulated)", upstream_status=429, upstream_retry_after=retry_after_s
        )
    if kind == "timeout":
        return LLMTimeout("the model did not answer in time (simulated)")
    status = int(kind)
    retry_after = retry_after_s if status == 503 else None
    return LLMUpstreamError(
        f"upstream failure {status} (simulated)",
        upstream_status=status,
        upstream_retry_after=retry_after,
    )


class Answerer:
    """Turns prompts into answers for one (words, seed), with the per-seed work done once
    (a keyed hasher that each prompt copies)."""

    __slots__ = ("_hasher", "_size", "words")

    def __init__(self, words: int, seed: int) -> None:
        self.words = words
        # At least 16 bytes even for short answers: the digest also tells prompts apart for
        # counted faults (`error-503-x2`).
        self._size = max(16, min(words, _MAX_DIGEST))
        key = seed.to_bytes(16, "little", signed=True)
        self._hasher = hashlib.blake2b(digest_size=self._size, key=key)

    def digest(self, messages: Sequence[Mapping[str, Any]]) -> bytes:
        # Roles and contents in order, between control characters that chat text does not
        # use, so different prompts do not join to the same bytes.
        try:
            # A list, not a generator, and [] not .get(): the cheapest join on the hot path.
            joined = "\x01".join([f"{m['role']}\x00{m['content']}" for m in messages])
        except KeyError:
            joined = "\x01".join(
                [f"{m.get('role', '')}\x00{m.get('content', '')}" for m in messages]
            )
        hasher = self._hasher.copy()
        hasher.update(joined.encode("utf-8", "surrogatepass"))
        return hasher.digest()

    def answer(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """The answer to `messages`; with no words to derive, the prompt is not hashed."""
        return self.text(messages, self.digest(messages) if self.words else b"")

    def text(self, messages: Sequence[Mapping[str, Any]], digest: bytes) -> str:
        """The answer to `messages` given their `digest`."""
        last = ""
        results: list[str] = []
        for message in reversed(messages):
            role = message.get("role")
            if role == "user":
                last = str(message.get("content", ""))
                break
            if role == "tool":  # a tool's result since the user spoke: the answer quotes it
                results.append(str(message.get("content") or ""))
        if results:
            last = f"{last} | tool: {'; '.join(reversed(results))}"
        if self.words == 0:
            return f"sim: {last}"
        if self.words <= len(digest):
            tail = " ".join(map(_BYTE_WORDS.__getitem__, digest[: self.words]))
        else:
            size = len(digest)
            tail = " ".join(
                _BYTE_WORDS[(digest[i % size] + i // size) % 256] for i in range(self.words)
            )
        return f"sim: {last} | {tail}"


@lru_cache(maxsize=64)
def answerer_for(words: int, seed: int) -> Answerer:
    """The shared `Answerer` for `words` and `seed`."""
    return Answerer(words, seed)


def answer_for(messages: Sequence[Mapping[str, Any]], words: int = 8, seed: int = 0) -> str:
    """The simulated model's answer to `messages` (what `sim://` and `llm-sim` return)."""
    return answerer_for(words, seed).answer(messages)


class SimulatedModel:
    """Answers at the configured pace and injects the configured failures.

    One instance serves many requests: the failure draws come from one generator seeded with
    `seed`, so the same sequence of requests meets the same failures.
    """

    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.requests = 0
        self.failures = 0
        self._answerer = answerer_for(settings.words, settings.seed)
        self._rng = random.Random(settings.seed)
        self._seen: dict[tuple[str, bytes], int] = {}
        s = settings
        self.stream_ttft_s = (s.ttft_ms if s.ttft_ms or s.tokens_per_s else s.latency_ms) / 1000
        self._token_interval_s = 1 / s.tokens_per_s if s.tokens_per_s else 0.0
        self.instant = s.latency_ms == 0 and s.ttft_ms == 0 and s.tokens_per_s == 0

    def respond(self, messages: Sequence[Mapping[str, Any]], model: str | None = None) -> str:
        """The answer to `messages`, or the injected failure for this request (raised)."""
        self.requests += 1
        digest = self._answerer.digest(messages)
        name = model or self.settings.model
        fault = parse_fault(name)
        if fault is not None and self._fault_applies(fault, name, digest):
            self.failures += 1
            raise _fault_error(fault.kind, self.settings.retry_after_ms / 1000)
        rate = self.settings.error_rate
        if rate and self._rng.random() < rate:
            self.failures += 1
            raise _fault_error("503", self.settings.retry_after_ms / 1000)
        return self._answerer.text(messages, digest)

    def _fault_applies(self, fault: Fault, model: str, digest: bytes) -> bool:
        if fault.times is None:
            return True
        if len(self._seen) > 100_000:  # fault injection is for tests; never grow unbounded
            self._seen.clear()
        key = (model, digest)
        seen = self._seen.get(key, 0)
        self._seen[key] = seen + 1
        return seen < fault.times

    def complete_delay_s(self, text: str) -> float:
        """How long a non-streamed `text` takes to arrive."""
        s = self.settings
        if s.latency_ms:
            return s.latency_ms / 1000
        if self.instant:
            return 0.0
        return self.stream_ttft_s + (len(split_tokens(text)) - 1) * self._token_interval_s

    async def complete(
        self, messages: Sequence[Mapping[str, Any]], model: str | None = None
    ) -> str:
        text = self.respond(messages, model)
        delay = self.complete_delay_s(text)
        if delay:
            await asyncio.sleep(delay)
        return text

    def pace(self, text: str, start: float | None = None) -> AsyncIterator[str]:
        """The tokens of `text` at the stream's pace, counted from `start` (monotonic)."""
        return self._paced(time.monotonic() if start is None else start, text)

    def stream(
        self, messages: Sequence[Mapping[str, Any]], model: str | None = None
    ) -> AsyncIterator[str]:
        """The answer's tokens at the stream's pace; a failure is raised by the first
        `__anext__`, as from a model's stream over HTTP."""
        return self._paced(time.monotonic(), None, messages, model)

    async def _paced(
        self,
        start: float,
        text: str | None,
        messages: Sequence[Mapping[str, Any]] = (),
        model: str | None = None,
    ) -> AsyncIterator[str]:
        # One generator, not `stream` wrapped around `pace`: a token passes one hop less.
        if text is None:
            text = self.respond(messages, model)
        first_due = start + self.stream_ttft_s
        interval = self._token_interval_s
        monotonic = time.monotonic
        tokens = split_tokens(text)
        if 0 < interval < TICK_S:
            # Faster than the ticker's resolution (a flood, for tests): a sleep per token, so
            # each token still gets a pass of the loop of its own rather than a millisecond's
            # worth leaving together. A token already due yields the loop too (a bare
            # `sleep(0)`): on a loaded machine a stream behind its pace would otherwise hand
            # its reader a run of tokens in one pass, and they would leave as one frame.
            for i, token in enumerate(tokens):
                delay = first_due + i * interval - monotonic()
                await asyncio.sleep(delay if delay > 0 else 0)
                yield token
            return
        # The loop's shared ticker (`sim_pacing`): one timer per millisecond with tokens due,
        # not one per token of every stream.
        pacer = ticker()
        for i, token in enumerate(tokens):
            # Each token is due at a fixed offset from the start, so a late wake-up does not
            # accumulate into a slower pace.
            due = first_due + i * interval
            while monotonic() < due:
                await pacer.at(due)
            yield token
