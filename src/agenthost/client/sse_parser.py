"""An incremental parser of server-sent events (the WHATWG `text/event-stream` format).

Bytes go in as they arrive, in pieces of any size; complete events come out. However a byte
stream is split, it parses to the same events: a line is only read once its terminator has
arrived (and a trailing CR waits for the next byte, which may be the LF of a CRLF), and text
is decoded a whole line at a time, so a UTF-8 sequence split across pieces stays intact.
"""

from __future__ import annotations

import msgspec

__all__ = ["SSEParser", "ServerSentEvent"]

_BOM = "\ufeff"


class ServerSentEvent(msgspec.Struct, frozen=True):
    """One dispatched event: `event` ("message" when unnamed), `data` (its data lines joined
    by LF), `id` (the last event id set so far in the stream, if any) and `retry` (ms)."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None


class SSEParser:
    """Feed bytes with `feed()`; it returns the events those bytes completed. Call
    `finish()` at the end of the stream."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._first_line = True
        self._event = ""
        self._data: list[str] = []
        self._last_id: str | None = None
        self._retry: int | None = None

    @property
    def last_event_id(self) -> str | None:
        """The stream's last event id (what a reconnect sends as `Last-Event-ID`)."""
        return self._last_id

    def feed(self, piece: bytes) -> list[ServerSentEvent]:
        self._buffer += piece
        events: list[ServerSentEvent] = []
        start = 0
        buffer = self._buffer
        size = len(buffer)
        while start < size:
            cr = buffer.find(b"\r", start)
            lf = buffer.find(b"\n", start)
            if cr == -1 and lf == -1:
                break
            if cr != -1 and (lf == -1 or cr < lf):
                if cr + 1 == size:
                    break  # CR or CRLF? wait for the next byte
                end, after = cr, cr + 2 if buffer[cr + 1] == 0x0A else cr + 1
            else:
                end, after = lf, lf + 1
            event = self._line(buffer[start:end].decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
            start = after
        del buffer[:start]
        return events

    def finish(self) -> list[ServerSentEvent]:
        """The stream ended: a CR held back as a possible CRLF was a line end after all. An
        event without its blank line is dropped, as the format says."""
        if self._buffer.endswith(b"\r"):
            return self.feed(b"\n")
        return []

    def _line(self, line: str) -> ServerSentEvent | None:
        if self._first_line:
            self._first_line = False
            if line.startswith(_BOM):
                line = line[1:]
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None  # a comment (servers send them as heartbeats)
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return ServerSentEvent(event or "message", "\n".join(data), self._last_id, self._retry)
