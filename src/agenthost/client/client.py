"""`AgentHostClient`: sessions, turns, streams and history over HTTP, SSE and WebSocket.

Every turn carries an Idempotency-Key (the turn id, generated unless given), and every retry
reuses it, so however often the client retries — after a timeout, a 503, a dead process — the
server runs and commits the turn once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal

import msgspec

from agenthost.client.errors import APIError, TurnFailed
from agenthost.client.http import HttpTransport
from agenthost.client.models import Message, Session, TurnResult, TurnStatus
from agenthost.client.response_stream import ResponseStream
from agenthost.client.retry import Endpoints, RetryPolicy
from agenthost.client.sse_source import SSESource
from agenthost.client.websocket_source import WebSocketSource
from agenthost.core.ids import ID_PATTERN, new_session_id, new_turn_id

__all__ = ["AgentHostClient"]

OnBusy = Literal["reject", "enqueue", "interrupt"]
OnDisconnect = Literal["continue", "cancel"]
Transport = Literal["sse", "ws"]

_session = msgspec.json.Decoder(Session).decode
_turn = msgspec.json.Decoder(TurnResult).decode
_status = msgspec.json.Decoder(TurnStatus).decode


class _Messages(msgspec.Struct):
    messages: list[Message]


_messages = msgspec.json.Decoder(_Messages).decode


class AgentHostClient:
    """An async client of one agenthost fleet.

    `base_urls`: one URL (a load balancer) or several processes, tried in order; the client
    moves to the next on a connection failure, a 502/503/504, or a WebSocket closed with
    1012/1006. `api_key` is sent as `Authorization: Bearer <api_key>` on every request and
    WebSocket handshake. `retry` bounds the retries (see `RetryPolicy`).
    `stream_idle_timeout`: a stream silent this long counts as dropped and is resumed.

    Use it as an async context manager (`async with AgentHostClient(...) as client:`), or
    call `close()` when done.
    """

    def __init__(
        self,
        base_urls: str | Sequence[str],
        *,
        api_key: str | None = None,
        retry: RetryPolicy | None = None,
        connect_timeout: float = 5.0,
        request_timeout: float | None = 360.0,
        stream_idle_timeout: float = 120.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        self.endpoints = Endpoints(urls)
        self.retry = retry or RetryPolicy()
        self.stream_idle_timeout = stream_idle_timeout
        self._http = HttpTransport(
            self.endpoints,
            self.retry,
            api_key=api_key,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            headers=headers,
        )

    async def __aenter__(self) -> AgentHostClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.close()

    @property
    def base_url(self) -> str:
        """The base URL requests go to now (it moves on failover)."""
        return self.endpoints.current

    # -- sessions ---------------------------------------------------------------------------

    async def create_session(
        self, session_id: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Session:
        """Create a session (its id generated unless given). 409 `session_exists` raises
        `APIError` for an id you chose; for a generated one it means an earlier attempt of
        this very call succeeded, so the session is returned."""
        chosen = session_id is not None
        sid = _sid(session_id) if session_id is not None else new_session_id()
        body: dict[str, Any] = {"session_id": sid}
        if metadata is not None:
            body["metadata"] = metadata
        resp = await self._http.request("POST", "/v1/sessions", body=body, ok=(201, 409))
        if resp.status == 409:
            if chosen:
                raise APIError(409, "session_exists", f"session {sid} exists")
            return await self.get_session(sid)
        return _session(resp.body)

    async def get_session(self, session_id: str) -> Session:
        """The session's summary; `NotFound` if there is none."""
        resp = await self._http.request("GET", f"/v1/sessions/{_sid(session_id)}")
        return _session(resp.body)

    async def messages(
        self, session_id: str, limit: int = 100, before: int | None = None
    ) -> list[Message]:
        """The newest `limit` messages (with `seq` below `before`), oldest first."""
        params = {"limit": str(limit)}
        if before is not None:
            params["before"] = str(before)
        resp = await self._http.request(
            "GET", f"/v1/sessions/{_sid(session_id)}/messages", params=params
        )
        return _messages(resp.body).messages

    async def delete_session(self, session_id: str) -> bool:
        """Delete the session and everything in it; False if there was none (a retry of a
        delete that went through also finds none)."""
        resp = await self._http.request("DELETE", f"/v1/sessions/{_sid(session_id)}", ok=(204, 404))
        return resp.status == 204

    # -- turns ------------------------------------------------------------------------------

    async def turn(
        self,
        session_id: str,
        message: str,
        *,
        turn_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        on_busy: OnBusy = "enqueue",
    ) -> TurnResult:
        """Run a turn and return its committed answer. Retried with the same turn id until
        it answers (no second agent call for a turn that committed). `TurnFailed` if the
        turn itself failed (the agent raised, timed out or was interrupted)."""
        tid = _tid(turn_id) if turn_id is not None else new_turn_id()
        body = _turn_body(message, metadata, on_busy, None)
        try:
            resp = await self._http.request(
                "POST",
                f"/v1/sessions/{_sid(session_id)}/turns",
                body=body,
                headers={"Idempotency-Key": tid},
                retry_busy=on_busy != "reject",
            )
        except APIError as exc:
            if exc.status in (502, 504) or exc.code == "interrupted":
                raise TurnFailed(tid, exc.code, exc.message) from exc
            raise
        return _turn(resp.body)

    async def turn_status(self, session_id: str, turn_id: str) -> TurnStatus:
        """A turn's status (pending, running, completed, failed); `NotFound` if unknown."""
        path = f"/v1/sessions/{_sid(session_id)}/turns/{_tid(turn_id)}"
        return _status((await self._http.request("GET", path)).body)

    def stream(
        self,
        session_id: str,
        message: str,
        *,
        transport: Transport = "sse",
        turn_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        on_busy: OnBusy = "enqueue",
        on_disconnect: OnDisconnect | None = None,
    ) -> ResponseStream:
        """Run a turn and stream its answer over SSE or WebSocket (`transport="ws"`).
        Nothing is sent until you iterate the returned stream; see `ResponseStream`."""
        sid = _sid(session_id)
        tid = _tid(turn_id) if turn_id is not None else new_turn_id()
        body = _turn_body(message, metadata, on_busy, on_disconnect)
        source: SSESource | WebSocketSource
        if transport == "sse":
            source = SSESource(
                self._http,
                "POST",
                f"/v1/sessions/{sid}/turns",
                body={**body, "stream": True},
                headers={"Idempotency-Key": tid},
                idle_timeout=self.stream_idle_timeout,
                retry_busy=on_busy != "reject",
            )
        elif transport == "ws":
            source = WebSocketSource(
                self._http, sid, tid, body, idle_timeout=self.stream_idle_timeout
            )
        else:
            raise ValueError(f"transport is 'sse' or 'ws', not {transport!r}")
        return ResponseStream(self._http, sid, tid, source, retry_busy=on_busy != "reject")

    def resume(self, session_id: str, turn_id: str, after: int = 0) -> ResponseStream:
        """Read a turn's events after seq `after` (read only: it never runs the turn), from
        any process; reconnects like `stream`."""
        sid = _sid(session_id)
        tid = _tid(turn_id)
        source = SSESource(
            self._http,
            "GET",
            f"/v1/sessions/{sid}/turns/{tid}/stream",
            idle_timeout=self.stream_idle_timeout,
        )
        stream = ResponseStream(self._http, sid, tid, source)
        stream.last_seq = after
        return stream


_ID = re.compile(ID_PATTERN)


def _checked(kind: str, value: str) -> str:
    if not _ID.fullmatch(value):
        raise ValueError(f"{kind} must be 1-128 of A-Z a-z 0-9 . _ : - (not {value!r})")
    return value


def _sid(session_id: str) -> str:
    return _checked("session_id", session_id)


def _tid(turn_id: str) -> str:
    return _checked("turn_id", turn_id)


def _turn_body(
    message: str,
    metadata: dict[str, Any] | None,
    on_busy: OnBusy,
    on_disconnect: OnDisconnect | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"message": message, "on_busy": on_busy}
    if metadata is not None:
        body["metadata"] = metadata
    if on_disconnect is not None:
        body["on_disconnect"] = on_disconnect
    return body
