"""The session routes: create, read, delete a session and page through its messages. A
session is named by the caller's id and scoped to the caller's tenant, so another tenant's
session answers 404 like an unknown one."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from agenthost.auth.authenticators import Authenticator
from agenthost.auth.principal import public_session_id, scoped_session_id
from agenthost.core.errors import SessionNotFound
from agenthost.core.ids import check_session_id, new_session_id
from agenthost.core.input_limits import InputLimits
from agenthost.stores.base import SessionInfo, SessionStore
from agenthost.turns.service import TurnService
from agenthost.web.error_responses import json_response
from agenthost.web.requests import MAX_BEFORE, BodyDecoder, int_query, request_body
from agenthost.web.schemas import CreateSession, MessageOut, MessagesOut, SessionOut

__all__ = ["SessionRoutes", "scoped_path_session"]


async def scoped_path_session(auth: Authenticator, request: Request) -> str:
    """The caller's session named in the path, as the store knows it (tenant-scoped)."""
    session_id = check_session_id(request.path_params["session_id"])
    principal = await auth.authenticate(request.headers.get("authorization"))
    return scoped_session_id(principal.tenant, session_id)


class SessionRoutes:
    def __init__(
        self,
        service: TurnService,
        auth: Authenticator,
        limits: InputLimits,
        *,
        session_ttl: float,
        max_body_bytes: int,
    ) -> None:
        self.service = service
        self.store: SessionStore = service.store
        self.auth = auth
        self.limits = limits
        self.session_ttl = session_ttl
        self.max_body_bytes = max_body_bytes
        self._create_decoder = BodyDecoder(CreateSession)

    async def create_session(self, request: Request) -> Response:
        principal = await self.auth.authenticate(request.headers.get("authorization"))
        body = await request_body(request, self.max_body_bytes)
        req = self._create_decoder(body) if body.strip() else CreateSession()
        self.limits.check_metadata(req.metadata)
        chosen = check_session_id(req.session_id) if req.session_id else new_session_id()
        session_id = scoped_session_id(principal.tenant, chosen)
        info = await self.store.create_session(session_id, req.metadata, self.session_ttl)
        return json_response(session_out(info), 201)

    async def get_session(self, request: Request) -> Response:
        session_id = await scoped_path_session(self.auth, request)
        min_seq = int_query(request, "min_seq", None, 0, MAX_BEFORE)
        info = await self.store.get_session(session_id, min_seq=min_seq)
        if info is None:
            raise SessionNotFound(f"no session {public_session_id(session_id)}")
        return json_response(session_out(info))

    async def delete_session(self, request: Request) -> Response:
        session_id = await scoped_path_session(self.auth, request)
        if not await self.service.delete_session(session_id):
            raise SessionNotFound(f"no session {public_session_id(session_id)}")
        return Response(status_code=204)

    async def list_messages(self, request: Request) -> Response:
        session_id = await scoped_path_session(self.auth, request)
        limit = int_query(request, "limit", 100, 1, 1000)
        before = int_query(request, "before", None, 0, MAX_BEFORE)
        min_seq = int_query(request, "min_seq", None, 0, MAX_BEFORE)
        messages = await self.store.list_messages(session_id, limit, before, min_seq=min_seq)
        if messages is None:
            raise SessionNotFound(f"no session {public_session_id(session_id)}")
        out = [MessageOut(m.role, m.content, m.turn_id, m.created_at, m.seq) for m in messages]
        return json_response(MessagesOut(out))


def session_out(info: SessionInfo) -> SessionOut:
    out: SessionOut = msgspec.convert(info, SessionOut, from_attributes=True)
    return msgspec.structs.replace(out, session_id=public_session_id(out.session_id))
