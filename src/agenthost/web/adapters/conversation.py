"""Which session and which turn an OpenAI-style request is, when the protocol sends the
whole conversation every time and no ids of its own.

The session is named by a header the client (or its configuration) sends: `X-Session-Id`,
Open WebUI's `X-OpenWebUI-Chat-Id` (sent with its forward-user-info setting) or
`X-Conversation-Id` (LibreChat, configured to carry its conversation id). Without one the
session is derived from a stable hash of what opens the conversation (the `user` field, the
system messages and the first user message): every request of one conversation carries those
same first messages, so the conversation keeps its session and the agent its history, which a
new session per request would lose. Two conversations of one tenant opening with the same
words share a session, which is why clients should send a header (docs/clients.md).

The turn id is the `Idempotency-Key` header, else a per-message id header (`X-Message-Id`),
else derived from the user message's position in the conversation and its text: a retry or a
"regenerate" resends the same conversation and gets the committed answer back with no second
agent call, while an edited message is a new turn.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import msgspec

from agenthost.core.errors import ValidationFailed
from agenthost.core.ids import check_session_id, check_turn_id
from agenthost.web.adapters.newest_user import no_text

__all__ = [
    "SESSION_HEADERS",
    "TURN_HEADERS",
    "ChatMessageIn",
    "conversation_ids",
    "message_text",
]

SESSION_HEADERS = ("x-session-id", "x-openwebui-chat-id", "x-conversation-id")
TURN_HEADERS = ("idempotency-key", "x-message-id")


class ChatMessageIn(msgspec.Struct):
    """An OpenAI-style message: `content` is text, a list of parts, or absent."""

    role: str
    content: str | list[dict[str, Any]] | None = None


def message_text(message: ChatMessageIn) -> str:
    """The text of a message (its text parts joined; other parts are not text)."""
    content = message.content
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(
        part["text"]
        for part in content
        if part.get("type") in ("text", "input_text") and isinstance(part.get("text"), str)
    )


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def conversation_ids(
    headers: dict[str, str], messages: Sequence[ChatMessageIn], user: str | None
) -> tuple[str, str, str]:
    """(session id, turn id, the new user message) of a request; 422 without a user message."""
    users = [m for m in messages if m.role == "user"]
    if not users:
        raise ValidationFailed("messages has no user message")
    text = message_text(users[-1])
    if not text:
        raise no_text()
    session_id = next((headers[h] for h in SESSION_HEADERS if headers.get(h)), None)
    if session_id is None:
        opening = [message_text(m) for m in messages if m.role in ("system", "developer")]
        session_id = "oa-" + _digest(user or "", *opening, message_text(users[0]))
    turn_id = next((headers[h] for h in TURN_HEADERS if headers.get(h)), None)
    if turn_id is None:
        turn_id = f"u{len(users)}-{_digest(text)[:16]}"
    return check_session_id(session_id), check_turn_id(turn_id), text
