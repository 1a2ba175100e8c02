"""What the client returns: sessions, messages, turn results and the typed events of a
streamed turn. Decoded from the server's JSON with msgspec; unknown fields are ignored so a
newer server does not break an older client."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "Chunk",
    "Done",
    "ErrorDetail",
    "Interrupt",
    "Message",
    "Reset",
    "Session",
    "StreamEvent",
    "ToolCall",
    "TurnResult",
    "TurnStatus",
]


class Session(msgspec.Struct, frozen=True):
    """A session's summary; `turns` counts committed turns."""

    session_id: str
    created_at: float
    updated_at: float
    turns: int
    metadata: dict[str, Any] = {}


class Message(msgspec.Struct, frozen=True):
    """One message of a session's history; `seq` is its position (page with `before=seq`)."""

    role: Literal["user", "assistant"]
    content: str
    turn_id: str
    created_at: float
    seq: int = 0


class TurnResult(msgspec.Struct, frozen=True):
    """A completed turn: the committed response."""

    session_id: str
    turn_id: str
    response: str


class ErrorDetail(msgspec.Struct, frozen=True):
    """Why a turn failed: a stable `code` and a human-readable `message`."""

    code: str
    message: str


class TurnStatus(msgspec.Struct, frozen=True):
    """A turn's status: pending, running, completed (with `response`) or failed (`error`)."""

    turn_id: str
    status: Literal["pending", "running", "completed", "failed"]
    response: str | None = None
    error: ErrorDetail | None = None


class Chunk(msgspec.Struct, frozen=True):
    """Text the agent wrote; append it to what you show."""

    seq: int
    text: str


class ToolCall(msgspec.Struct, frozen=True):
    """The agent called a tool: its call id, name, arguments and result (JSON values)."""

    seq: int
    call_id: str
    name: str
    arguments: Any
    result: Any


class Interrupt(msgspec.Struct, frozen=True):
    """The agent stopped to ask the human `value`; the turn ends, and the session's next
    turn's message is the answer."""

    seq: int
    value: Any
    id: str | None = None


class Reset(msgspec.Struct, frozen=True):
    """The process running the turn died and another runs it again from the start: discard
    the text received so far for this turn (the stream's `text` is already emptied)."""

    seq: int
    attempt: int | None = None


class Done(msgspec.Struct, frozen=True):
    """The turn committed; `result.response` is the whole answer."""

    seq: int
    result: TurnResult


StreamEvent = Chunk | ToolCall | Interrupt | Reset | Done
