"""The rule every adapter applies to a request's messages: the newest user message is the
turn, so the request must carry a user message, and the newest one must have text (and, where
the protocol gives messages ids, an id agenthost can use as the turn id).

The document states the part of the rule JSON Schema can say (`contains` a user message, ids
by pattern) and, in the description, the rest: "the newest user message" is a position JSON
Schema cannot name. A request that breaks it is refused with 422 and a message starting with
`NEWEST_USER`, so a reader (and the schemathesis test) can tell it from other refusals.
"""

from __future__ import annotations

from typing import Any

from agenthost.core.errors import ValidationFailed
from agenthost.core.ids import ID_PATTERN, ID_RE

__all__ = [
    "ID_SCHEMA",
    "NEWEST_USER",
    "check_message_id",
    "no_text",
    "user_messages_schema",
]

NEWEST_USER = "the newest user message"

ID_SCHEMA: dict[str, Any] = {"pattern": ID_PATTERN}
"""An id agenthost takes as a session or turn id (a mismatch is a 400)."""


def user_messages_schema(
    user_item: dict[str, Any] | None = None, *, needs_id: bool = False
) -> dict[str, Any]:
    """The JSON Schema of a `messages` list: at least one user message (`user_item`, by
    default an object whose `role` is "user")."""
    item = user_item or {
        "type": "object",
        "properties": {"role": {"const": "user"}},
        "required": ["role"],
    }
    rule = f"{NEWEST_USER.capitalize()} is the turn: it must have text"
    if needs_id:
        rule += f" and an id matching {ID_PATTERN} (the turn id)"
    return {
        "contains": item,
        "description": rule + "; else 422. Other messages are not read.",
    }


def no_text(what: str = NEWEST_USER) -> ValidationFailed:
    """The 422 for a newest user message without text."""
    return ValidationFailed(f"{what} has no text")


def check_message_id(message_id: str) -> str:
    """The newest user message's id as a turn id (422 when it cannot be one)."""
    if not message_id:
        raise ValidationFailed(f"{NEWEST_USER} has no id")
    if not ID_RE.fullmatch(message_id):
        raise ValidationFailed(
            f"{NEWEST_USER} has an id agenthost cannot use as a turn id: it must be 1-128 "
            "characters of letters, digits, '.', '_', ':' or '-'"
        )
    return message_id
