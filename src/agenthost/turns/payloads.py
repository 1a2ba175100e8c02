"""How a turn's end is told to a client: the committed turn (`TurnOut`) or an error
(`ErrorDetail`). A streamed turn's `done` and `error` events carry these, and the HTTP API
answers with the same types (`agenthost.web.schemas` re-exports them), so a stream and a plain
answer cannot disagree."""

from __future__ import annotations

import msgspec

from agenthost.auth.principal import public_session_id
from agenthost.stores.base import TurnError, TurnRecord

__all__ = ["ErrorDetail", "TurnOut", "answer_out", "error_event_data", "turn_out"]


class TurnOut(msgspec.Struct):
    """A completed turn's answer."""

    session_id: str
    turn_id: str
    response: str


class ErrorDetail(msgspec.Struct):
    """A stable machine-readable `code` and a human-readable `message`."""

    code: str
    message: str


def turn_out(record: TurnRecord) -> TurnOut:
    """The answer of a completed turn, with the session id the client knows (not the
    tenant-scoped one the store keeps)."""
    return answer_out(record.session_id, record.turn_id, record.response or "")


def answer_out(session_id: str, turn_id: str, response: str) -> TurnOut:
    """`turn_out` of the turn that commits `response` (before its record is made)."""
    return TurnOut(public_session_id(session_id), turn_id, response)


def error_event_data(record: TurnRecord) -> ErrorDetail:
    """Why a finished turn failed, for its final `error` event."""
    error = record.error or TurnError("failed", "the turn failed")
    return ErrorDetail(error.code, error.message)
