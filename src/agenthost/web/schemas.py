"""The HTTP API's request and response bodies, as msgspec types.

Handlers decode requests with these types and encode responses from them, and the OpenAPI
document is generated from the same types, so the documentation cannot drift from the code.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from agenthost.core.ids import ID_PATTERN
from agenthost.turns.payloads import ErrorDetail, TurnOut

__all__ = [
    "ChatRequest",
    "ChatResponse",
    "CreateSession",
    "ErrorBody",
    "ErrorDetail",
    "Health",
    "MessageOut",
    "MessagesOut",
    "SessionOut",
    "TurnAccepted",
    "TurnOut",
    "TurnRequest",
    "TurnStatusOut",
]

Id = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, description="[A-Za-z0-9._:-]{1,128}")]
Text = Annotated[str, msgspec.Meta(min_length=1, description="The user's message.")]
CallbackURL = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^https?://[^\s]+$",
        max_length=2048,
        description="http(s) URL POSTed the turn's outcome when it ends (background turns).",
    ),
]


class CreateSession(msgspec.Struct, forbid_unknown_fields=True):
    """Body of POST /v1/sessions (optional): choose the id, set initial metadata."""

    session_id: Id | None = None
    metadata: dict[str, Any] = {}


class SessionOut(msgspec.Struct):
    """A session's summary; `turns` counts committed turns."""

    session_id: str
    created_at: float
    updated_at: float
    turns: int
    metadata: dict[str, Any]


class MessageOut(msgspec.Struct):
    """One message; `seq` is its position in the history (page with `before=seq`)."""

    role: Literal["user", "assistant"]
    content: str
    turn_id: str
    created_at: float
    seq: int


class MessagesOut(msgspec.Struct):
    """Messages oldest first."""

    messages: list[MessageOut]


class TurnRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of POST /v1/sessions/{session_id}/turns.

    `metadata` is merged into the session's metadata for this turn. `on_busy` says what to do
    when another turn of the session is running: `reject` (409), `enqueue` (wait, bounded, then
    run) or `interrupt` (cancel the running turn, then run). `on_disconnect` says what happens
    to the turn if the client leaves before the answer: `continue` (it finishes and commits;
    read or resume it later) or `cancel` (it stops and ends as failed/interrupted).
    `background: true` answers 202 at once with the turn id and a `Location` to poll; the
    turn runs on (on a worker, with `--role api`), and `callback_url`, if given, receives a
    POST of its outcome when it ends.
    """

    message: Text
    metadata: dict[str, Any] | None = None
    on_busy: Literal["reject", "enqueue", "interrupt"] = "enqueue"
    stream: bool = False
    on_disconnect: Literal["continue", "cancel"] = "continue"
    background: bool = False
    callback_url: CallbackURL | None = None


class TurnAccepted(msgspec.Struct):
    """Answer 202 to a background turn: poll `GET .../turns/{turn_id}` (the `Location`
    header) or read its events from `GET .../turns/{turn_id}/stream`."""

    session_id: str
    turn_id: str
    status: Literal["pending"] = "pending"


class TurnErrorOut(msgspec.Struct):
    """Why a turn failed."""

    code: str
    message: str


class TurnStatusOut(msgspec.Struct, omit_defaults=True):
    """A turn's status: pending (recorded, its process gone: a retry runs it), running,
    completed (with `response`) or failed (with `error`)."""

    turn_id: str
    status: Literal["pending", "running", "completed", "failed"]
    response: str | None = None
    error: TurnErrorOut | None = None


class ChatRequest(msgspec.Struct):
    """Body of the reference design's POST /chat/{session_id}."""

    message: Text


class ChatResponse(msgspec.Struct):
    """Answer of POST /chat/{session_id}."""

    response: str


class ErrorBody(msgspec.Struct):
    """Every error response: {"error": {"code", "message"}}."""

    error: ErrorDetail


class Health(msgspec.Struct):
    """Liveness / readiness."""

    status: str
