"""One POST of a callback (`turns/callbacks.py`) over aiohttp, connecting to allowed (public)
addresses only unless told otherwise: names are resolved here and any address not allowed is
dropped before connecting, so a name that resolves to a public address now and a private one
later cannot slip through."""

from __future__ import annotations

import socket
from collections.abc import Callable

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

__all__ = ["CallbackConnectionError", "post_once"]


class CallbackConnectionError(OSError):
    """The POST did not get an answer (aiohttp's client error, as an OSError)."""


class _AllowedResolver(AbstractResolver):
    """Resolves names to their allowed (public) addresses only (none left: the connection
    fails)."""

    def __init__(self, allowed: Callable[[str], bool]) -> None:
        self._resolver = DefaultResolver()
        self._allowed = allowed

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._resolver.resolve(host, port, family)
        public = [entry for entry in found if self._allowed(entry["host"])]
        if not public:
            raise OSError(f"{host} resolves to no public address (callback refused)")
        return public

    async def close(self) -> None:
        await self._resolver.close()


async def post_once(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    allowed: Callable[[str], bool] | None,
    timeout: float,
) -> tuple[int, str | None]:
    """POST `body` to `url` without following a redirect: the status and the `Location`.
    `allowed`: the addresses a name may resolve to (None: any)."""
    connector = aiohttp.TCPConnector(
        resolver=None if allowed is None else _AllowedResolver(allowed), force_close=True
    )
    try:
        async with (
            aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as http,
            http.post(url, data=body, headers=headers, allow_redirects=False) as resp,
        ):
            return resp.status, resp.headers.get("location")
    except aiohttp.ClientError as exc:
        raise CallbackConnectionError(str(exc) or type(exc).__name__) from exc
