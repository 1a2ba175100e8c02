"""What adapters read from a turn's events: the text of a `chunk` event (already JSON-encoded,
so it is spliced into the protocol's own JSON without decoding and encoding it again), and
the answer or error of a final one."""

from __future__ import annotations

import msgspec

from agenthost.brokers.base import StreamEvent
from agenthost.turns.payloads import ErrorDetail, TurnOut

__all__ = ["chunk_text_json", "final_error", "final_turn"]

_PREFIX = b'{"text":'
_turn = msgspec.json.Decoder(TurnOut)
_error = msgspec.json.Decoder(ErrorDetail)
_encode = msgspec.json.encode


class _Chunk(msgspec.Struct):
    text: str = ""


_chunk = msgspec.json.Decoder(_Chunk)


def chunk_text_json(data: bytes) -> bytes:
    """The chunk's text as a JSON string literal (`"..."`)."""
    if data.startswith(_PREFIX) and data.endswith(b"}"):
        return data[len(_PREFIX) : -1]
    return _encode(_chunk.decode(data).text)


def final_turn(event: StreamEvent) -> TurnOut:
    """The committed turn a `done` event carries."""
    return _turn.decode(event.data)


def final_error(event: StreamEvent) -> ErrorDetail:
    """Why the turn failed, from an `error` event."""
    try:
        return _error.decode(event.data)
    except msgspec.DecodeError:
        return ErrorDetail("failed", "the turn failed")
