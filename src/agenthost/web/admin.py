"""The admin token check shared by every admin route (drain, the dashboard's data, and
/metrics when it asks for it): off without a token, a constant-time compare with one."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from agenthost.core.errors import Unauthorized

__all__ = ["check_admin"]


def check_admin(request: Request, token: str | None) -> None:
    """Raise Unauthorized (401) unless the request carries `Authorization: Bearer <token>`."""
    if not token:
        raise Unauthorized("admin routes are disabled: start the server with --admin-token")
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.encode(), token.encode()):
        raise Unauthorized("admin routes need Authorization: Bearer <admin token>")
