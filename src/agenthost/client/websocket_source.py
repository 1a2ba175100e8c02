"""A turn's events over the WebSocket endpoint `/v1/sessions/{session_id}/ws`.

One connection per streamed turn: it sends a `turn` frame (with `after`, the last seq seen,
when resuming) and reads that turn's frames. A close before the turn's `done` — 1012 from a
draining process, 1006 from a dead one or a cut connection, 4001 for a slow reader — is a
retryable failure, so the stream reconnects (to the next process, except after 4001).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from agenthost.client.errors import RetryableFailure, StreamProtocolError
from agenthost.client.http import HttpTransport, failure_for_response
from agenthost.client.response_stream import WireEvent

__all__ = ["CLOSE_SERVICE_RESTART", "CLOSE_SLOW_CONSUMER", "WebSocketSource", "websocket_url"]

CLOSE_ABNORMAL = 1006
CLOSE_SERVICE_RESTART = 1012
CLOSE_SLOW_CONSUMER = 4001
# Closes that mean "this process is going away": an `interrupted` error frame just before
# one of these (a turn the drain cancelled) is worth resuming elsewhere.
PROCESS_GONE_CLOSES = frozenset({1001, CLOSE_ABNORMAL, 1011, CLOSE_SERVICE_RESTART, 1013})
# Handshake statuses of a process that cannot take the connection now. A server that closes
# before accepting (Starlette, while draining) answers the handshake with 403.
FAILOVER_HANDSHAKE_STATUSES = frozenset({403, 502, 503, 504})

_decode = msgspec.json.decode
_encode = msgspec.json.encode


def websocket_url(base_url: str, path: str) -> str:
    """`http://host:port` + path as `ws://host:port/path` (https -> wss)."""
    if base_url.startswith("https://"):
        return "wss://" + base_url[len("https://") :] + path
    return "ws://" + base_url[len("http://") :] + path


def _close_code(exc: ConnectionClosed) -> int:
    return exc.rcvd.code if exc.rcvd is not None else CLOSE_ABNORMAL


class WebSocketSource:
    """Reads one turn's frames; `frame` holds the turn frame's fields but `after`."""

    def __init__(
        self,
        http: HttpTransport,
        session_id: str,
        turn_id: str,
        frame: Mapping[str, Any],
        *,
        idle_timeout: float,
        close_grace: float = 1.0,
    ) -> None:
        self._http = http
        self._path = f"/v1/sessions/{session_id}/ws"
        self._turn_id = turn_id
        self._frame = {**frame, "type": "turn", "turn_id": turn_id}
        self._idle_timeout = idle_timeout
        self._close_grace = close_grace

    async def _connect(self, url: str) -> ClientConnection:
        try:
            return await connect(
                url,
                additional_headers=self._http.headers,
                open_timeout=self._http.connect_timeout,
                proxy=None,
                close_timeout=2,
            )
        except InvalidStatus as exc:
            response = exc.response
            status = response.status_code
            if status in FAILOVER_HANDSHAKE_STATUSES:
                raise RetryableFailure(
                    f"WebSocket handshake to {url} answered {status}", failover=True
                ) from exc
            raise failure_for_response(
                status, response.headers, bytes(response.body or b"")
            ) from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise RetryableFailure(
                f"WebSocket to {url}: {type(exc).__name__}: {exc}", failover=True
            ) from exc

    async def events(
        self, base_url: str, after: int, resuming: bool
    ) -> AsyncGenerator[WireEvent, None]:
        url = websocket_url(base_url, self._path)
        ws = await self._connect(url)
        try:
            frame = dict(self._frame)
            if resuming:
                frame["after"] = after
            await ws.send(_encode(frame).decode())
            while True:
                async with asyncio.timeout(self._idle_timeout):
                    raw = await ws.recv()
                message = _decode(raw)
                if not isinstance(message, dict):
                    raise StreamProtocolError(f"a frame that is not an object: {raw!r}")
                if message.get("turn_id", self._turn_id) not in (None, self._turn_id):
                    continue
                kind = str(message.get("type", ""))
                interrupted = kind == "error" and message.get("code") == "interrupted"
                gone = interrupted and await self._process_going_away(ws)
                seq = message.get("seq", 0)
                yield WireEvent(seq if isinstance(seq, int) else 0, kind, message, gone)
        except ConnectionClosed as exc:
            code = _close_code(exc)
            raise RetryableFailure(
                f"{url} closed with {code} before the turn ended",
                failover=code != CLOSE_SLOW_CONSUMER,
            ) from exc
        except (OSError, TimeoutError) as exc:
            raise RetryableFailure(f"{url}: {type(exc).__name__}: {exc}", failover=True) from exc
        except msgspec.DecodeError as exc:
            raise StreamProtocolError(f"a frame that is not JSON from {url}") from exc
        finally:
            await ws.close()

    async def _process_going_away(self, ws: ClientConnection) -> bool:
        """After an error frame: does the server close the connection as a process that
        goes away? A drain cancels its turns (error `interrupted`), then closes with 1012."""
        try:
            await asyncio.wait_for(ws.wait_closed(), self._close_grace)
        except TimeoutError:
            return False
        return (ws.close_code or CLOSE_ABNORMAL) in PROCESS_GONE_CLOSES
