"""A turn's events over server-sent events: `POST .../turns` with `stream: true` (which
runs, attaches to or re-runs the turn) or `GET .../turns/{turn_id}/stream` (read only), both
with `Last-Event-ID` when resuming."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import aiohttp
import msgspec

from agenthost.client.errors import StreamProtocolError
from agenthost.client.http import HttpTransport, failure_for_exception, failure_for_response
from agenthost.client.response_stream import WireEvent
from agenthost.client.sse_parser import ServerSentEvent, SSEParser

__all__ = ["SSESource"]

_decode = msgspec.json.decode


def wire_event(event: ServerSentEvent) -> WireEvent:
    """An SSE event of the agenthost contract (`id: <seq>`, JSON data) as a wire event."""
    try:
        seq = int(event.id or "")
    except ValueError:
        raise StreamProtocolError(f"an event without a numeric id: {event!r}") from None
    try:
        data = _decode(event.data)
    except msgspec.DecodeError:
        raise StreamProtocolError(f"an event whose data is not JSON: {event!r}") from None
    if not isinstance(data, dict):
        raise StreamProtocolError(f"an event whose data is not an object: {event!r}")
    return WireEvent(seq, event.event, data)


async def process_ready(http: HttpTransport, base_url: str) -> bool:
    """Whether the process at `base_url` answers GET /readyz with 200 (not draining, not
    gone)."""
    timeout = aiohttp.ClientTimeout(total=http.connect_timeout)
    try:
        async with http.session.get(base_url + "/readyz", timeout=timeout) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, OSError, TimeoutError):
        return False


class SSESource:
    """Reads one turn's events with `method` on `path` (JSON `body` for a POST)."""

    def __init__(
        self,
        http: HttpTransport,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idle_timeout: float,
        retry_busy: bool = True,
    ) -> None:
        self._http = http
        self._retry_busy = retry_busy
        self._method = method
        self._path = path
        self._body = None if body is None else msgspec.json.encode(body)
        self._headers = dict(headers or {})
        self._idle_timeout = idle_timeout

    async def _wire_event(self, event: ServerSentEvent, base_url: str) -> WireEvent:
        wire = wire_event(event)
        # A drain cancels its turns with `interrupted`; an SSE stream has no close code to say
        # so, so ask the process: if it is no longer ready, resume elsewhere.
        interrupted = wire.kind == "error" and wire.data.get("code") == "interrupted"
        if interrupted and not await process_ready(self._http, base_url):
            return WireEvent(wire.seq, wire.kind, wire.data, process_gone=True)
        return wire

    async def events(
        self, base_url: str, after: int, resuming: bool
    ) -> AsyncGenerator[WireEvent, None]:
        headers = {**self._headers, "Accept": "text/event-stream"}
        if self._body is not None:
            headers["Content-Type"] = "application/json"
        if after > 0:
            headers["Last-Event-ID"] = str(after)
        url = base_url + self._path
        connect = self._http.connect_timeout
        timeout = aiohttp.ClientTimeout(total=None, connect=connect, sock_connect=connect)
        try:
            async with self._http.session.request(
                self._method, url, data=self._body, headers=headers, timeout=timeout
            ) as resp:
                if resp.status != 200:
                    raise failure_for_response(
                        resp.status, resp.headers, await resp.read(), retry_busy=self._retry_busy
                    )
                parser = SSEParser()
                while True:
                    async with asyncio.timeout(self._idle_timeout):
                        piece = await resp.content.readany()
                    if not piece:
                        for event in parser.finish():
                            yield await self._wire_event(event, base_url)
                        return
                    for event in parser.feed(piece):
                        yield await self._wire_event(event, base_url)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            failure = failure_for_exception(exc, url)
            if failure is None:
                raise
            raise failure from exc
