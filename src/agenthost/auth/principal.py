"""Who is calling: the tenant a request acts for, the key it used, and that tenant's limits.

Sessions are scoped by tenant: the store holds `<tenant>/<session_id>`, so a tenant can
neither see nor touch another's sessions, and asking for one answers 404 like any unknown
session (no existence leak). `/` is not allowed in a client's ids, so scopes never collide.
"""

from __future__ import annotations

import re
from typing import TypeGuard

import msgspec

from agenthost.core.errors import BadRequest

__all__ = [
    "ANONYMOUS",
    "DEFAULT_KEY_BURST",
    "TENANT_PATTERN",
    "Principal",
    "TenantLimits",
    "check_tenant",
    "default_burst",
    "is_tenant",
    "public_session_id",
    "scoped_session_id",
]

TENANT_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
# Always `fullmatch`: `$` also matches before a final newline, so `match` lets "acme\n" in.
_TENANT_RE = re.compile(TENANT_PATTERN)


class TenantLimits(msgspec.Struct, frozen=True):
    """A tenant's turn limits; 0 means no limit.

    `turns_per_minute` is enforced by GCRA: turns are spaced 60/rate seconds apart, with
    `burst` of them allowed back to back (burst 1: strictly spaced, so any minute admits at
    most `turns_per_minute` + burst - 1). `max_inflight` bounds turns running at once.
    """

    turns_per_minute: int = 0
    burst: int = 1
    max_inflight: int = 0

    @property
    def unlimited(self) -> bool:
        return self.turns_per_minute <= 0 and self.max_inflight <= 0


DEFAULT_KEY_BURST = 10
"""A key's burst unless told otherwise: a person typing a few messages in a row, or a client
retrying, is not refused; any minute still admits at most the rate plus this."""


def default_burst(turns_per_minute: int) -> int:
    """The burst of a key created without one: DEFAULT_KEY_BURST, or the rate if smaller."""
    return max(1, min(DEFAULT_KEY_BURST, turns_per_minute))


class Principal(msgspec.Struct, frozen=True):
    """The caller: its tenant ("" without authentication), the API key id if one was
    used, and its limits."""

    tenant: str
    limits: TenantLimits
    key_id: str | None = None


ANONYMOUS = Principal("", TenantLimits())


def is_tenant(value: object) -> TypeGuard[str]:
    """Whether `value` is a valid tenant name (a whole-string match)."""
    return isinstance(value, str) and _TENANT_RE.fullmatch(value) is not None


def check_tenant(tenant: str) -> str:
    if not _TENANT_RE.fullmatch(tenant):
        raise BadRequest("a tenant is 1-64 characters of letters, digits, '.', '_' or '-'")
    return tenant


def scoped_session_id(tenant: str, session_id: str) -> str:
    """The store's id of a tenant's session (the client's id without authentication)."""
    return f"{tenant}/{session_id}" if tenant else session_id


def public_session_id(stored: str) -> str:
    """The client's id of a stored session id."""
    return stored.rpartition("/")[2]
