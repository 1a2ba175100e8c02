"""API keys: `ahk_<key id>_<secret>`, shown once when created and stored only as a SHA-256
hash (the secret is 192 random bits, so a fast hash is safe), with the tenant and its limits.

Key stores live in the session store's backend, side by side: memory (tests), SQLite (a table
in the same file) and Redis (two keys on one slot, so Redis Cluster works too).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Protocol, runtime_checkable

import msgspec

from agenthost.auth.principal import TenantLimits, check_tenant

__all__ = ["KeyRecord", "KeyStore", "hash_key", "new_key"]

KEY_PREFIX = "ahk_"


class KeyRecord(msgspec.Struct, frozen=True):
    """One API key, as stored (without the key itself)."""

    key_id: str
    tenant: str
    key_hash: str
    limits: TenantLimits
    name: str = ""
    created_at: float = 0.0
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(tenant: str, limits: TenantLimits, name: str = "") -> tuple[str, KeyRecord]:
    """A new key and its record; the key is returned once and never stored."""
    key_id = secrets.token_hex(8)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(24)}"
    record = KeyRecord(key_id, check_tenant(tenant), hash_key(key), limits, name, time.time())
    return key, record


@runtime_checkable
class KeyStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def add(self, record: KeyRecord) -> None: ...

    async def by_hash(self, key_hash: str) -> KeyRecord | None:
        """The key with this hash, revoked or not; None if unknown."""
        ...

    async def list(self, tenant: str | None = None) -> list[KeyRecord]:
        """Every key (of `tenant`), oldest first."""
        ...

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key; False if there is no such active key."""
        ...
