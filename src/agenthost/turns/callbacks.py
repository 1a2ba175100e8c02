"""A background turn's callback: when the turn ends, its `callback_url` gets a POST of the
turn's outcome, signed, retried with back-off, and never sent to a private address unless
`--callback-allow-private` says so.

The body is JSON `{"event": "turn.completed" | "turn.failed", "session_id", "turn_id",
"status", "response"?, "error"?}`. With `--callback-secret`, the header
`X-Agenthost-Signature: t=<unix seconds>,sha256=<hex>` carries the HMAC-SHA256 of
`<t>.<body>` under the secret (the time is signed too, so a receiver can refuse a replay).

Server-side request forgery: a callback URL is the client's, so every address it leads to
is checked where the connection is made — the names a URL or a redirect names are resolved
and any loopback, private, link-local, multicast or reserved address is dropped before
connecting (a name that resolves to a public address now and a private one later cannot slip
through), and an address written in the URL is checked the same way. Redirects are followed
by hand, at most three, each hop checked again. A 2xx answer ends the delivery; a connection
failure, a timeout, a 429 or a 5xx is retried after 0.5, 1, 2, 4 s...; another 4xx is final.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import random
import time
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

import msgspec

from agenthost.auth.principal import public_session_id
from agenthost.core.errors import AgentHostError
from agenthost.stores.base import TurnRecord
from agenthost.turns.public_addresses import public_address

__all__ = ["CallbackBody", "CallbackSender", "public_address", "signature"]

log = logging.getLogger("agenthost.callbacks")

MAX_REDIRECTS = 3


class CallbackError(msgspec.Struct):
    code: str
    message: str


class CallbackBody(msgspec.Struct, omit_defaults=True):
    """What a callback URL receives when its turn ends."""

    event: str
    session_id: str
    turn_id: str
    status: str
    response: str | None = None
    error: CallbackError | None = None


def signature(secret: str, body: bytes, at: int) -> str:
    """The `X-Agenthost-Signature` value of `body` sent at Unix time `at`."""
    mac = hmac.new(secret.encode(), b"%d." % at + body, hashlib.sha256).hexdigest()
    return f"t={at},sha256={mac}"


class _Refused(Exception):
    """A callback URL that must not be called (final: not retried)."""


class CallbackSender:
    """Delivers the callbacks of this process's background turns (one per process)."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        allow_private: bool = False,
        attempts: int = 6,
        first_delay: float = 0.5,
        timeout: float = 10.0,
        allowed: Callable[[str], bool] = public_address,
    ) -> None:
        """`allowed`: which addresses a callback may reach without `allow_private` (every
        hop checked): the public ones; a narrower rule lets a test stand in for them."""
        self.secret = secret
        self.allow_private = allow_private
        self.allowed = allowed
        self.attempts = attempts
        self.first_delay = first_delay
        self.timeout = timeout
        self._tasks: set[asyncio.Task[bool]] = set()

    def turn_ended(
        self,
        url: str,
        session_id: str,
        turn_id: str,
        record: TurnRecord | None,
        error: AgentHostError | None,
    ) -> None:
        """Start delivering the callback of a turn that ended (in its own task)."""
        if record is not None and record.status == "completed":
            body = CallbackBody(
                "turn.completed", public_session_id(session_id), turn_id, "completed",
                response=record.response or "",
            )  # fmt: skip
        else:
            code, message = (
                ("failed", "the turn failed") if error is None else (error.code, error.message)
            )
            body = CallbackBody(
                "turn.failed", public_session_id(session_id), turn_id, "failed",
                error=CallbackError(code, message),
            )  # fmt: skip
        task = asyncio.ensure_future(self.deliver(url, msgspec.json.encode(body)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def deliver(self, url: str, body: bytes) -> bool:
        """POST `body` to `url` until a 2xx, a final refusal or the last attempt; True if
        it was delivered."""
        delay = self.first_delay
        for attempt in range(1, self.attempts + 1):
            try:
                status = await self._post(url, body)
            except _Refused as exc:
                log.warning("callback to %s refused: %s", _safe(url), exc)
                return False
            except (OSError, TimeoutError) as exc:
                status, why = 0, str(exc) or type(exc).__name__
            else:
                why = f"HTTP {status}"
                if 200 <= status < 300:
                    return True
                if status < 500 and status != 429:
                    log.warning("callback to %s answered %d: not retried", _safe(url), status)
                    return False
            if attempt == self.attempts:
                log.warning("callback to %s failed %d times (%s); given up", _safe(url),
                            attempt, why)  # fmt: skip
                return False
            await asyncio.sleep(delay * (1 + random.random() / 4))
            delay *= 2
        return False

    async def _post(self, url: str, body: bytes) -> int:
        # aiohttp is imported by the first callback, not by every server's start-up.
        from agenthost.turns.callback_http import post_once

        headers = {"content-type": "application/json", "user-agent": "agenthost-callback"}
        if self.secret:
            headers["x-agenthost-signature"] = signature(self.secret, body, int(time.time()))
        for _ in range(MAX_REDIRECTS + 1):
            self._check(url)
            status, location = await post_once(
                url,
                body,
                headers,
                allowed=None if self.allow_private else self.allowed,
                timeout=self.timeout,
            )
            if status in (301, 302, 303, 307, 308) and location:
                url = urljoin(url, location)
                continue
            return status
        raise _Refused(f"more than {MAX_REDIRECTS} redirects")

    def _check(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _Refused("not an http(s) URL")
        host = parts.hostname
        if self.allow_private:
            return
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return  # a name: the resolver keeps only its public addresses
        if not self.allowed(host):
            raise _Refused(f"{host} is not a public address (--callback-allow-private)")

    async def close(self) -> None:
        """Wait a little for deliveries under way, then stop them."""
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=5.0)
            for task in pending:
                task.cancel()


def _safe(url: str) -> str:
    """The URL without its query (which may carry a token) for a log line."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
