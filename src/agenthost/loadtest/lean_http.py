"""A lean HTTP/1.1 client for `--mode http` turns: one keep-alive connection per session, a
bare asyncio protocol, the request written in one piece, the answer parsed by httptools and
decoded by msgspec.

At 10,000 sessions the load client must not be what the run measures. aiohttp spends about
0.4 ms of CPU per turn (its request, response, header and stream objects, timers, the
connection pool); this spends about a seventh of that (measured at 10,000 sessions), and
keeps few objects alive per turn in flight, so the client's garbage collections stay short.
It answers with the same `Attempt` as the aiohttp senders (`agenthost.loadtest.client`), so
retries, verification and the report do not change. Plain `http://` only: HTTPS, SSE,
WebSocket and background turns go through aiohttp.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import msgspec

from agenthost.core.deadline_sweep import DeadlineSweep
from agenthost.loadtest.client import Attempt, error_code_attempt

__all__ = ["LeanHttpClient", "lean_http_usable"]


def lean_http_usable(url: str) -> bool:
    """Whether the lean client can talk to `url` (plain HTTP)."""
    return urlsplit(url).scheme == "http"


class _Answer(msgspec.Struct):
    response: Any = ""


_decode_answer = msgspec.json.Decoder(_Answer).decode
_encode = msgspec.json.Encoder().encode


class _Exchange(asyncio.Protocol):
    """One keep-alive connection; at most one request on it at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        # The parser holds this protocol (its callbacks) and this protocol the parser: the
        # cycle is broken when the connection ends, so closed connections are freed at once
        # rather than left to the garbage collector.
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.received = False  # any byte of the current answer
        self.complete = False
        self.status = 0
        self.keep_alive = False
        self.chunks: list[bytes] = []
        self.retry_after: bytes | None = None
        self.failure: str | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without inheriting from it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received = True
        if self.parser is None:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._end("bad_response")
            return
        if self.complete:
            self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.parser = None
        if not self.complete:
            self._end(type(exc).__name__ if exc is not None else "ServerDisconnectedError")

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 11 and name.lower() == b"retry-after":
            self.retry_after = value

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        assert self.parser is not None
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True

    # the exchange

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _end(self, failure: str) -> None:
        """The answer will not come: note why and close the connection."""
        if self.failure is None:
            self.failure = failure
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def timed_out(self) -> None:
        if not self.complete:
            self._end("timeout")

    async def exchange(
        self, request: bytes, deadlines: DeadlineSweep[_Exchange], timeout: float
    ) -> None:
        """Send `request` and wait for its whole answer (or the reason it did not come)."""
        assert self.transport is not None
        self.received = self.complete = False
        self.chunks = []
        self.retry_after = self.failure = None
        self.waiter = asyncio.get_running_loop().create_future()
        deadlines.arm(self, timeout)
        self.transport.write(request)
        try:
            await self.waiter
        finally:
            deadlines.disarm(self)
            self.waiter = None


def _expire(exchange: _Exchange, _reason: str) -> None:
    exchange.timed_out()


class LeanHttpClient:
    """Sends turns as `POST {url}/v1/sessions/{sid}/turns` over one connection per session."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"the lean client speaks plain http:// only, not {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.timeout = timeout
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._path = parts.path.rstrip("/") + "/v1/sessions/"
        self._head = (f"Host: {parts.netloc}\r\nContent-Type: application/json\r\n{extra}").encode(
            "latin-1"
        )
        self._idle: dict[str, _Exchange] = {}
        # Every exchange's timeout, kept by one sweep (at most a second late), not a timer each.
        self._deadlines: DeadlineSweep[_Exchange] = DeadlineSweep(min(1.0, timeout / 4), _expire)

    def _request(self, sid: str, tid: str, body: dict[str, Any]) -> bytes:
        payload = _encode(body)
        return (
            b"POST %s%s/turns HTTP/1.1\r\n%sIdempotency-Key: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (
                self._path.encode("latin-1"),
                sid.encode("latin-1"),
                self._head,
                tid.encode("latin-1"),
                len(payload),
                payload,
            )
        )

    async def _connect(self) -> _Exchange:
        loop = asyncio.get_running_loop()
        _, protocol = await asyncio.wait_for(
            loop.create_connection(_Exchange, self.host, self.port), self.timeout
        )
        return protocol

    async def send(self, sid: str, tid: str, body: dict[str, Any]) -> Attempt:
        """One attempt of a turn; network failures come back as an Attempt, never raised."""
        request = self._request(sid, tid, body)
        conn = self._idle.pop(sid, None)
        try:
            if conn is not None and not conn.closed:
                await conn.exchange(request, self._deadlines, self.timeout)
                if conn.failure is None or conn.received or conn.failure == "timeout":
                    return self._attempt(sid, conn)
                # The server closed the idle connection as this request went out: nothing
                # was read, so send it again (same Idempotency-Key) on a new connection.
            conn = await self._connect()
            await conn.exchange(request, self._deadlines, self.timeout)
        except TimeoutError:
            return Attempt(0, error="timeout")
        except OSError as exc:
            return Attempt(0, error=type(exc).__name__)
        return self._attempt(sid, conn)

    def _attempt(self, sid: str, conn: _Exchange) -> Attempt:
        if conn.failure is not None:
            return Attempt(0, error=conn.failure)
        if conn.keep_alive and not conn.closed:
            self._idle[sid] = conn
        elif conn.transport is not None:
            conn.transport.close()
        status = conn.status
        body = b"".join(conn.chunks)
        if status != 200:
            retry_after = conn.retry_after.decode("latin-1") if conn.retry_after else None
            return error_code_attempt(status, body, retry_after)
        try:
            return Attempt(200, response=str(_decode_answer(body).response))
        except msgspec.DecodeError:
            return Attempt(0, error="DecodeError")

    def close(self) -> None:
        """Close every idle connection (and stop keeping time)."""
        self._deadlines.stop()
        for conn in self._idle.values():
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()
