"""Bounded retries with jittered exponential backoff, and the list of base URLs to fail over
across.

A retry budget counts consecutive failures: `max_attempts` tries and `max_retry_time`
seconds since the last progress (a response, or an event of a stream), so a stream that
runs for minutes can still survive several reconnects while a dead fleet gives up quickly.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agenthost.client.errors import RetriesExhausted, RetryableFailure

__all__ = ["Endpoints", "RetryBudget", "RetryPolicy", "parse_retry_after"]


@dataclass(frozen=True)
class RetryPolicy:
    """How hard the client tries before raising `RetriesExhausted`.

    - `max_attempts`: tries in a row without progress (the first one included).
    - `max_retry_time`: seconds of failing in a row after which no new try starts.
    - `initial_backoff`, `max_backoff`: the backoff before the n-th retry is drawn uniformly
      from [0, min(max_backoff, initial_backoff * 2**n)] ("full jitter", so a fleet of
      clients does not come back in step). A failover to a base URL not yet tried in this
      run of failures goes at once.
    - `max_retry_after`: the longest Retry-After honoured; a longer one ends the retries.
    """

    max_attempts: int = 8
    max_retry_time: float = 60.0
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    max_retry_after: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.max_retry_time < 0 or self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("retry times must be >= 0")


class Endpoints:
    """The base URLs, in order, and which one is in use. Shared by every request of one
    client, so after a failover the next request starts on the process that answered."""

    def __init__(self, base_urls: Sequence[str]) -> None:
        urls = [url.rstrip("/") for url in base_urls]
        if not urls:
            raise ValueError("give at least one base URL")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"a base URL starts with http:// or https://: {url!r}")
        self.urls = urls
        self._index = 0

    @property
    def current(self) -> str:
        return self.urls[self._index]

    def failover(self, from_url: str) -> str:
        """Move to the URL after `from_url` (unless another request already moved on)."""
        if self.current == from_url:
            self._index = (self._index + 1) % len(self.urls)
        return self.current


class RetryBudget:
    """One operation's retry state: call `failed()` after each retryable failure (it returns
    the delay before the next try, or raises `RetriesExhausted`), `progressed()` after each
    success that moved the operation on."""

    def __init__(
        self,
        policy: RetryPolicy,
        endpoints_count: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.policy = policy
        self.endpoints_count = endpoints_count
        self._clock = clock
        self._uniform = uniform
        self.attempts = 1
        self.total_failures = 0
        self._since = clock()
        self._failovers = 0

    def progressed(self) -> None:
        self.attempts = 1
        self._since = self._clock()
        self._failovers = 0

    def failed(self, failure: RetryableFailure) -> float:
        policy = self.policy
        self.total_failures += 1
        elapsed = self._clock() - self._since
        if self.attempts >= policy.max_attempts or elapsed >= policy.max_retry_time:
            raise RetriesExhausted(self.attempts, failure) from failure
        retries = self.attempts  # retries done so far, before this one
        self.attempts += 1
        if failure.failover and self._failovers < self.endpoints_count - 1:
            # Another process may be fine: go there now; its Retry-After is not ours.
            self._failovers += 1
            return 0.0
        ceiling = min(policy.max_backoff, policy.initial_backoff * 2 ** (retries - 1))
        delay = self._uniform(0.0, ceiling)
        if failure.retry_after is not None:
            if failure.retry_after > policy.max_retry_after:
                raise RetriesExhausted(self.attempts - 1, failure) from failure
            delay = max(delay, failure.retry_after)
        if elapsed + delay > policy.max_retry_time:
            raise RetriesExhausted(self.attempts - 1, failure) from failure
        return delay


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: either delay-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
