"""A request's fingerprint: what makes two sends of one `Idempotency-Key` the same request.

The IETF idempotency-key draft refuses a key sent again with a different request (422). A turn
is the same request when its message and metadata are the same; `on_busy`, `stream` and the
other options only say how to wait for it or deliver it, so a resend may change them. The
fingerprint is kept with the turn record, so any process, on any store, can compare.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

__all__ = ["request_fingerprint"]

_encode = msgspec.json.Encoder(order="deterministic").encode
_BLANK = hashlib.blake2b(digest_size=12)  # copied per call: cheaper than a new one


def request_fingerprint(message: str, metadata: dict[str, Any] | None) -> str:
    """A short digest of the message and the metadata (keys in a fixed order, so a dict
    built in another order is the same request)."""
    digest = _BLANK.copy()
    digest.update(_encode((message, metadata or None)))
    return digest.hexdigest()
