"""HTTP under the client: one aiohttp session, the base URLs, and the mapping from a
response or a network failure to "raise it", "retry here" or "retry on the next process".

A request is retried only when a retry cannot do harm: reads and deletes always, turns
because they carry an Idempotency-Key the server deduplicates on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import msgspec

from agenthost.client.errors import APIError, NotFound, RetryableFailure
from agenthost.client.retry import Endpoints, RetryBudget, RetryPolicy, parse_retry_after

__all__ = ["HttpResponse", "HttpTransport", "failure_for_exception", "failure_for_response"]

# Statuses that mean "this process cannot serve you now" (a balancer's 502 too, and a
# draining process's 503): another process can.
FAILOVER_STATUSES = frozenset({502, 503, 504})
# Codes of a 409 or a stream's `error` event that a retry of the same turn may fix.
RETRYABLE_CODES = frozenset(
    {"session_busy", "draining", "overloaded", "unavailable", "store_unavailable", "lease_lost"}
)
FAILOVER_CODES = frozenset({"draining", "unavailable", "store_unavailable", "lease_lost"})


class _ErrorDetail(msgspec.Struct):
    code: str = "http_error"
    message: str = ""


class _ErrorBody(msgspec.Struct):
    error: _ErrorDetail


_decode_error = msgspec.json.Decoder(_ErrorBody).decode


class HttpResponse(msgspec.Struct, frozen=True):
    """A whole (non-streamed) response."""

    status: int
    body: bytes
    url: str


def error_detail(status: int, body: bytes) -> tuple[str, str]:
    """The `(code, message)` of an error response; made up when the body is not ours (a
    balancer's HTML page, say)."""
    try:
        detail = _decode_error(body).error
        return detail.code, detail.message
    except (msgspec.DecodeError, msgspec.ValidationError):
        text = body[:200].decode("utf-8", "replace").strip()
        return f"http_{status}", text or f"HTTP {status}"


def failure_for_response(
    status: int, headers: Mapping[str, str], body: bytes, *, retry_busy: bool = True
) -> APIError | RetryableFailure:
    """What an error response means to the retry loop."""
    code, message = error_detail(status, body)
    retry_after = parse_retry_after(headers.get("Retry-After"))
    reason = f"{status} {code}: {message}"
    # A 502/504 with agenthost's own error body is the turn's outcome (the agent or its LLM
    # failed, after the server's own retries); without it, a balancer lost the process.
    ours = not code.startswith("http_")
    if status in FAILOVER_STATUSES and not (ours and status != 503):
        return RetryableFailure(reason, failover=True, retry_after=retry_after)
    if status == 429 or (status == 409 and code == "session_busy" and retry_busy):
        return RetryableFailure(reason, failover=False, retry_after=retry_after)
    if status == 404:
        return NotFound(status, code, message, retry_after)
    return APIError(status, code, message, retry_after)


def failure_for_exception(exc: BaseException, url: str) -> RetryableFailure | None:
    """A network failure as a retryable failure (next process), or None if it is not one."""
    if isinstance(exc, aiohttp.ClientResponseError):
        return None
    if isinstance(exc, aiohttp.ClientError | OSError | TimeoutError):
        name = type(exc).__name__
        return RetryableFailure(f"{name} from {url}: {exc}", failover=True)
    return None


class HttpTransport:
    """The client's connection pool and retry loop for whole requests."""

    def __init__(
        self,
        endpoints: Endpoints,
        policy: RetryPolicy,
        *,
        api_key: str | None,
        connect_timeout: float,
        request_timeout: float | None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.policy = policy
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.headers: dict[str, str] = dict(headers or {})
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(
                total=None, connect=self.connect_timeout, sock_connect=self.connect_timeout
            )
            self._session = aiohttp.ClientSession(
                timeout=timeout, headers=self.headers, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def budget(self) -> RetryBudget:
        return RetryBudget(self.policy, len(self.endpoints.urls))

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
        retry_busy: bool = True,
    ) -> HttpResponse:
        """Send until a status in `ok` comes back (returned), an error that is not worth
        retrying (raised as `APIError`), or the retry budget runs out (`RetriesExhausted`)."""
        budget = self.budget()
        data = None if body is None else msgspec.json.encode(body)
        send_headers = dict(headers or {})
        if data is not None:
            send_headers["Content-Type"] = "application/json"
        timeout = aiohttp.ClientTimeout(
            total=self.request_timeout,
            connect=self.connect_timeout,
            sock_connect=self.connect_timeout,
        )
        while True:
            base = self.endpoints.current
            url = base + path
            try:
                async with self.session.request(
                    method, url, data=data, headers=send_headers, params=params, timeout=timeout
                ) as resp:
                    payload = await resp.read()
                    if resp.status in ok:
                        return HttpResponse(resp.status, payload, base)
                    failure = failure_for_response(
                        resp.status, resp.headers, payload, retry_busy=retry_busy
                    )
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                failure = failure_for_exception(exc, url) or RetryableFailure(
                    f"{type(exc).__name__}: {exc}", failover=True
                )
            if isinstance(failure, APIError):
                raise failure
            delay = budget.failed(failure)
            if failure.failover:
                self.endpoints.failover(base)
            if delay:
                await asyncio.sleep(delay)
