"""A streamed turn that survives its connection: `ResponseStream`.

It reads a turn's numbered events from an `EventSource` (SSE or WebSocket). When the
connection drops, the process drains (1012) or dies, it reconnects — to the next base URL
when the failure says the process is gone — and asks for the events after the last `seq` it
saw, with the same turn id, so the server attaches to the running turn, replays a finished
one, or runs again a turn whose process died (announcing it with a `reset` event). Events
with a `seq` already seen are dropped, so the caller sees each event once, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from types import TracebackType
from typing import Any, Protocol

import msgspec

from agenthost.client.errors import APIError, RetryableFailure, StreamProtocolError, TurnFailed
from agenthost.client.http import FAILOVER_CODES, RETRYABLE_CODES, HttpTransport
from agenthost.client.models import (
    Chunk,
    Done,
    Interrupt,
    Reset,
    StreamEvent,
    ToolCall,
    TurnResult,
)

__all__ = ["EventSource", "ResponseStream", "WireEvent"]


class WireEvent(msgspec.Struct, frozen=True):
    """An event as a transport received it: its `seq`, its kind (`chunk`, `reset`, `done`,
    `error`, or a kind this client does not know) and its JSON payload. `process_gone`: the
    transport saw the process go away right after this error (the turn was cancelled by a
    drain, not failed), so the turn is resumed elsewhere."""

    seq: int
    kind: str
    data: dict[str, Any]
    process_gone: bool = False


class EventSource(Protocol):
    """One way of reading a turn's events (SSE, WebSocket). `events` opens one connection
    to `base_url` and yields what arrives after `after`; `resuming` is false only for the
    first connection. It raises `RetryableFailure` when reconnecting may help."""

    def events(
        self, base_url: str, after: int, resuming: bool
    ) -> AsyncGenerator[WireEvent, None]: ...


class ResponseStream:
    """The events of one turn: iterate it (`async for event in stream`) for `Chunk`,
    `ToolCall`, `Interrupt`, `Reset` and `Done`, or `await stream.collect()` for the `TurnResult`.

    `text` is the answer so far (emptied by a `Reset`; the committed response once `Done`
    arrives). A failed turn raises `TurnFailed`; when reconnecting stops helping,
    `RetriesExhausted`. Iterate it once; leaving early closes the connection (the turn
    itself runs on and commits unless it was sent with `on_disconnect="cancel"`).
    """

    def __init__(
        self,
        http: HttpTransport,
        session_id: str,
        turn_id: str,
        source: EventSource,
        *,
        retry_busy: bool = True,
    ) -> None:
        self._http = http
        self._source = source
        self._retry_busy = retry_busy
        self.session_id = session_id
        self.turn_id = turn_id
        self.last_seq = 0
        self.result: TurnResult | None = None
        self.base_url: str | None = None
        self.connections = 0
        self.resets = 0
        self.duplicates_dropped = 0
        self._parts: list[str] = []
        self._iterator: AsyncGenerator[StreamEvent, None] | None = None

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def reconnects(self) -> int:
        return max(0, self.connections - 1)

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        if self._iterator is not None:
            raise RuntimeError("a ResponseStream can be iterated only once")
        self._iterator = self._run()
        return self._iterator

    async def collect(self) -> TurnResult:
        """Read the stream to its end and return the committed turn."""
        async for _ in self:
            pass
        assert self.result is not None
        return self.result

    async def aclose(self) -> None:
        """Stop reading and close the connection."""
        if self._iterator is not None:
            await self._iterator.aclose()

    async def __aenter__(self) -> ResponseStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self) -> AsyncGenerator[StreamEvent, None]:
        budget = self._http.budget()
        endpoints = self._http.endpoints
        while True:
            base = endpoints.current
            self.base_url = base
            self.connections += 1
            try:
                events = self._source.events(base, self.last_seq, self.connections > 1)
                async with contextlib.aclosing(events):
                    async for wire in events:
                        event = self._accept(wire)
                        if event is None:
                            continue
                        budget.progressed()
                        yield event
                        if isinstance(event, Done):
                            return
                raise RetryableFailure(
                    f"the stream from {base} ended before the turn did", failover=False
                )
            except RetryableFailure as failure:
                delay = budget.failed(failure)
                if failure.failover:
                    endpoints.failover(base)
                if delay:
                    await asyncio.sleep(delay)

    def _accept(self, wire: WireEvent) -> StreamEvent | None:
        """Fold one wire event into the stream's state; None when there is nothing to show
        (a duplicate, or a kind this client does not know)."""
        data = wire.data
        if wire.kind == "error":
            self.last_seq = max(self.last_seq, wire.seq)
            code = str(data.get("code", "error"))
            message = str(data.get("message", ""))
            if code == "session_busy" and not self._retry_busy:
                raise APIError(409, code, message)
            if code in RETRYABLE_CODES or wire.process_gone:
                failover = code in FAILOVER_CODES or wire.process_gone
                raise RetryableFailure(f"turn {self.turn_id}: {code}: {message}", failover=failover)
            raise TurnFailed(self.turn_id, code, message)
        if wire.seq <= self.last_seq:
            self.duplicates_dropped += 1
            return None
        self.last_seq = wire.seq
        if wire.kind == "chunk":
            text = data.get("text")
            if not isinstance(text, str):
                raise StreamProtocolError(f"a chunk without text: {data!r}")
            self._parts.append(text)
            return Chunk(wire.seq, text)
        if wire.kind == "tool":
            return ToolCall(
                wire.seq,
                str(data.get("call_id", "")),
                str(data.get("name", "")),
                data.get("arguments"),
                data.get("result"),
            )
        if wire.kind == "interrupt":
            interrupt_id = data.get("id")
            return Interrupt(wire.seq, data.get("value"), interrupt_id if interrupt_id else None)
        if wire.kind == "reset":
            self._parts.clear()
            self.resets += 1
            attempt = data.get("attempt")
            return Reset(wire.seq, attempt if isinstance(attempt, int) else None)
        if wire.kind == "done":
            response = data.get("response")
            if not isinstance(response, str):
                raise StreamProtocolError(f"a done event without a response: {data!r}")
            self.result = TurnResult(
                str(data.get("session_id", self.session_id)),
                str(data.get("turn_id", self.turn_id)),
                response,
            )
            # The committed answer is the truth (a replay of an expired stream is only `done`).
            self._parts = [response]
            return Done(wire.seq, self.result)
        return None
