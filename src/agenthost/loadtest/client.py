"""Sending one turn over HTTP, SSE or WebSocket, as a well-written client does.

Each sender returns a `Attempt`: the status, the answer or the kind of failure, and the
time to the first chunk for streams. Retrying is the runner's business; senders never raise
for network trouble.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp
import msgspec

__all__ = ["Attempt", "error_code_attempt", "send_turn"]

_decode = msgspec.json.decode

# Error codes a stream or socket reports after its HTTP answer, as the status they mean: the
# runner retries these with the same key, as it would a 503 or 409 response.
_RETRYABLE_CODES = {
    "draining": 503,
    "overloaded": 503,
    "store_unavailable": 503,
    "lease_lost": 503,
    "unavailable": 503,
    "session_busy": 409,
}


def _error_frame(code: str) -> Attempt:
    return Attempt(_RETRYABLE_CODES.get(code, 200), error=code)


WS_RECEIVE_TIMEOUT_S = 30.0
WS_HANDSHAKE_TIMEOUT_S = 10.0


class Attempt(msgspec.Struct):
    """One try of a turn. `status` is the HTTP status (0: no answer at all)."""

    status: int
    response: str | None = None
    error: str | None = None  # a kind, e.g. connection, timeout, http_503, session_busy
    retry_after: float | None = None
    first_chunk_s: float | None = None


def error_code_attempt(status: int, body: bytes, retry_after: str | None) -> Attempt:
    """A refused turn: the error code of the body (`{"error": {"code": ...}}`, else
    `http_<status>`) and the Retry-After header's seconds, if any."""
    code = f"http_{status}"
    with contextlib.suppress(msgspec.DecodeError, KeyError, TypeError):
        code = str(_decode(body)["error"]["code"])
    try:
        seconds = float(retry_after) if retry_after is not None else None
    except ValueError:
        seconds = None
    return Attempt(status, error=code, retry_after=seconds)


async def _error_attempt(resp: aiohttp.ClientResponse) -> Attempt:
    body = await resp.read()
    return error_code_attempt(resp.status, body, resp.headers.get("Retry-After"))


async def send_http(
    http: aiohttp.ClientSession, base: str, sid: str, tid: str, body: dict[str, Any]
) -> Attempt:
    async with http.post(
        f"{base}/v1/sessions/{sid}/turns", json=body, headers={"Idempotency-Key": tid}
    ) as resp:
        if resp.status != 200:
            return await _error_attempt(resp)
        data = await resp.json(content_type=None)
        return Attempt(200, response=str(data.get("response", "")))


async def _read_events(
    resp: aiohttp.ClientResponse, started: float, state: dict[str, Any]
) -> Attempt | None:
    """Consume SSE events; the Attempt at `done`/`error`, None if the stream broke off."""
    event, data = "message", b""
    async for raw in resp.content:
        line = raw.rstrip(b"\r\n")
        if not line:
            if event == "chunk":
                if state["first"] is None:
                    state["first"] = time.monotonic() - started
                state["text"].append(_decode(data).get("text", ""))
            elif event == "done":
                done = _decode(data)
                return Attempt(200, response=str(done.get("response", "")),
                               first_chunk_s=state["first"])  # fmt: skip
            elif event == "error":
                return _error_frame(str(_decode(data).get("code", "stream_error")))
            event, data = "message", b""
        elif line.startswith(b"id:"):
            state["last_id"] = line[3:].strip().decode()
        elif line.startswith(b"event:"):
            event = line[6:].strip().decode()
        elif line.startswith(b"data:"):
            data = line[5:].strip()
    return None


async def send_sse(
    http: aiohttp.ClientSession, base: str, sid: str, tid: str, body: dict[str, Any]
) -> Attempt:
    started = time.monotonic()
    state: dict[str, Any] = {"first": None, "text": [], "last_id": None}
    headers = {"Idempotency-Key": tid, "Accept": "text/event-stream"}
    async with http.post(
        f"{base}/v1/sessions/{sid}/turns", json={**body, "stream": True}, headers=headers
    ) as resp:
        if resp.status != 200:
            return await _error_attempt(resp)
        result = await _read_events(resp, started, state)
    if result is not None:
        return result
    # The stream broke off: resume after the last event we saw, on any process.
    resume_headers = {"Last-Event-ID": state["last_id"]} if state["last_id"] else {}
    async with http.get(
        f"{base}/v1/sessions/{sid}/turns/{tid}/stream", headers=resume_headers
    ) as resp:
        if resp.status != 200:
            return await _error_attempt(resp)
        result = await _read_events(resp, started, state)
    return result or Attempt(0, error="stream_cut")


async def send_ws(
    http: aiohttp.ClientSession, base: str, sid: str, tid: str, body: dict[str, Any]
) -> Attempt:
    started = time.monotonic()
    first: float | None = None
    last_seq = -1
    ws_url = base.replace("http", "ws", 1) + f"/v1/sessions/{sid}/ws"
    frame: dict[str, Any] = {"type": "turn", "message": body["message"], "turn_id": tid}
    # A server that goes silent must not hold the client forever: the heartbeat notices a
    # dead peer, the receive timeout a live one that never answers.
    timeout = aiohttp.ClientWSTimeout(ws_receive=WS_RECEIVE_TIMEOUT_S, ws_close=5.0)
    # A handshake that gets no answer (say, sent to a server on its way out) is retried
    # elsewhere instead of waiting out the whole request timeout.
    async with asyncio.timeout(WS_HANDSHAKE_TIMEOUT_S):
        connection = await http.ws_connect(ws_url, heartbeat=10, timeout=timeout)
    async with connection as ws:
        await ws.send_json(frame)
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = _decode(msg.data)
            kind = data.get("type")
            if kind == "chunk" and data.get("turn_id") == tid:
                last_seq = int(data.get("seq", last_seq))
                if first is None:
                    first = time.monotonic() - started
            elif kind == "done":
                return Attempt(200, response=str(data.get("response", "")), first_chunk_s=first)
            elif kind == "error":
                return _error_frame(str(data.get("code", "ws_error")))
        close = ws.close_code
    # Closed (1012 while draining, or dropped): the runner retries; resume is by turn id.
    del last_seq
    return Attempt(0, error=f"ws_closed_{close}" if close else "ws_closed")


async def _submit(
    http: aiohttp.ClientSession, base: str, sid: str, tid: str, body: dict[str, Any]
) -> Attempt | None:
    """POST a background turn; None once it is accepted (202), else the failed Attempt."""
    async with http.post(
        f"{base}/v1/sessions/{sid}/turns",
        json={**body, "background": True},
        headers={"Idempotency-Key": tid},
    ) as resp:
        if resp.status != 202:
            return await _error_attempt(resp)
        await resp.read()
    return None


async def send_background_poll(
    http: aiohttp.ClientSession, base: str, sid: str, tid: str, body: dict[str, Any]
) -> Attempt:
    """A background turn, its answer read by polling its status (every 50 ms at first,
    backing off to 500 ms)."""
    refused = await _submit(http, base, sid, tid, body)
    if refused is not None:
        return refused
    delay = 0.05
    while True:
        async with http.get(f"{base}/v1/sessions/{sid}/turns/{tid}") as resp:
            if resp.status != 200:
                return await _error_attempt(resp)
            status = await resp.json(content_type=None)
        if status["status"] == "completed":
            return Attempt(200, response=str(status.get("response", "")))
        if status["status"] == "failed":
            code = str((status.get("error") or {}).get("code", "failed"))
            # A turn that failed for a transient reason is sent again (same key): it reruns.
            return _error_frame(code) if code in _RETRYABLE_CODES else Attempt(200, error=code)
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.5)


async def send_background_stream(
    http: aiohttp.ClientSession, base: str, sid: str, tid: str, body: dict[str, Any]
) -> Attempt:
    """A background turn, its answer read from its stream (resumed if it breaks off)."""
    started = time.monotonic()
    refused = await _submit(http, base, sid, tid, body)
    if refused is not None:
        return refused
    state: dict[str, Any] = {"first": None, "text": [], "last_id": None}
    for _ in range(3):
        headers = {"Last-Event-ID": state["last_id"]} if state["last_id"] else {}
        async with http.get(
            f"{base}/v1/sessions/{sid}/turns/{tid}/stream", headers=headers
        ) as resp:
            if resp.status != 200:
                return await _error_attempt(resp)
            result = await _read_events(resp, started, state)
        if result is not None:
            return result
    return Attempt(0, error="stream_cut")


_SENDERS = {
    "http": send_http,
    "sse": send_sse,
    "ws": send_ws,
    "background-poll": send_background_poll,
    "background-stream": send_background_stream,
}


async def send_turn(
    mode: str, http: aiohttp.ClientSession, base: str, sid: str, tid: str, body: dict[str, Any]
) -> Attempt:
    """One attempt over `mode`; network failures come back as an Attempt, never raised."""
    try:
        return await _SENDERS[mode](http, base, sid, tid, body)
    except TimeoutError:
        return Attempt(0, error="timeout")
    except (aiohttp.ClientError, ConnectionError, msgspec.DecodeError) as exc:
        return Attempt(0, error=type(exc).__name__)
