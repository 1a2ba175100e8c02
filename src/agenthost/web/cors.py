"""Cross-origin access for browser front ends on another origin (`--cors-origins`).

Off unless origins are configured. Listed origins are answered with their own origin and
`Access-Control-Allow-Credentials: true` (cookies may go along); `*` allows any origin but
never with credentials, since a browser refuses `*` with them and echoing any origin with
credentials would hand every site the user's cookies. Preflights are answered for every
route, the native API's and the adapters' alike, with the headers the API reads
(`Authorization`, `Idempotency-Key`, `Last-Event-ID`, the session headers) allowed and
`Retry-After` exposed.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

__all__ = ["cors_middleware", "parse_origins"]

ALLOWED_METHODS = ("GET", "POST", "DELETE", "OPTIONS")
EXPOSED_HEADERS = ("Retry-After", "X-Request-Id", "X-Session-Id")
MAX_AGE_S = 600


def parse_origins(raw: str) -> list[str]:
    """`https://a.example,http://localhost:3000` -> the origins; ValueError for one that is
    not `*` or scheme://host[:port]."""
    origins = [o.strip().rstrip("/") for o in raw.split(",") if o.strip()]
    for origin in origins:
        if origin == "*":
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise ValueError(
                f"cors_origins: {origin!r} is not an origin (scheme://host[:port], or *)"
            )
    if "*" in origins and len(origins) > 1:
        raise ValueError("cors_origins: * allows every origin; list no others beside it")
    return origins


def cors_middleware(origins: Sequence[str]) -> Middleware | None:
    """The CORS layer for `origins` (None: no CORS headers at all)."""
    if not origins:
        return None
    anyone = list(origins) == ["*"]
    return Middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_methods=list(ALLOWED_METHODS),
        allow_headers=["*"],
        allow_credentials=not anyone,
        expose_headers=list(EXPOSED_HEADERS),
        max_age=MAX_AGE_S,
    )
