"""Identifiers: validation of client-chosen ids and generation of new ones."""

from __future__ import annotations

import re
import secrets

from agenthost.core.errors import BadRequest, InvalidSessionId

__all__ = [
    "ID_PATTERN",
    "ID_RE",
    "check_session_id",
    "check_turn_id",
    "new_session_id",
    "new_turn_id",
]

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
# Match with `fullmatch` only: `$` also matches before a final newline.
ID_RE = re.compile(ID_PATTERN)


def check_session_id(session_id: str) -> str:
    """Return `session_id` if it is allowed, else raise InvalidSessionId (400)."""
    if not ID_RE.fullmatch(session_id):
        raise InvalidSessionId(
            "session_id must be 1-128 characters of letters, digits, '.', '_', ':' or '-'"
        )
    return session_id


def check_turn_id(turn_id: str) -> str:
    """Return `turn_id` (an Idempotency-Key) if allowed, else raise BadRequest (400)."""
    if not ID_RE.fullmatch(turn_id):
        raise BadRequest(
            "turn_id / Idempotency-Key must be 1-128 characters of letters, digits, "
            "'.', '_', ':' or '-'"
        )
    return turn_id


def new_session_id() -> str:
    """A random session id (128 bits, URL-safe)."""
    return "s_" + secrets.token_urlsafe(16)


def new_turn_id() -> str:
    """A random turn id (96 bits, URL-safe)."""
    return "t_" + secrets.token_urlsafe(12)
