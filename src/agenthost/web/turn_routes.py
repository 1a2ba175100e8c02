"""The turn routes: run a turn (a JSON answer, or SSE with `stream: true` or `Accept:
text/event-stream`), read a turn's status, read its events again from any process, and the
reference design's `POST /chat/{session_id}`. Each calls the turn service; none knows the
order of a turn."""

from __future__ import annotations

import asyncio

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from agenthost.auth.authenticators import Authenticator
from agenthost.auth.principal import Principal, public_session_id, scoped_session_id
from agenthost.core.errors import AgentHostError, TurnIdRequired, TurnNotFound
from agenthost.core.ids import check_session_id, check_turn_id, new_turn_id
from agenthost.core.input_limits import InputLimits
from agenthost.observability.logs import bind_turn
from agenthost.stores.base import TurnRecord
from agenthost.turns.callbacks import CallbackSender
from agenthost.turns.payloads import turn_out
from agenthost.turns.service import StreamEnded, TurnService
from agenthost.web.error_responses import json_response
from agenthost.web.requests import (
    BodyDecoder,
    event_number,
    idempotency_key,
    read_body,
    request_body,
    single_query,
    watch_disconnect,
)
from agenthost.web.schemas import (
    ChatRequest,
    ChatResponse,
    TurnAccepted,
    TurnErrorOut,
    TurnRequest,
    TurnStatusOut,
)
from agenthost.web.session_routes import scoped_path_session
from agenthost.web.sse import SSEResponse

__all__ = ["TurnRoutes"]

_encode = msgspec.json.Encoder().encode
_JSON_HEADERS = [(b"content-type", b"application/json")]


class TurnRoutes:
    def __init__(
        self,
        service: TurnService,
        auth: Authenticator,
        limits: InputLimits,
        *,
        max_body_bytes: int,
        sse_heartbeat_s: float = 15.0,
        callbacks: CallbackSender | None = None,
    ) -> None:
        self.service = service
        self.callbacks = callbacks or CallbackSender()
        self.auth = auth
        self.limits = limits
        self.max_body_bytes = max_body_bytes
        self.sse_heartbeat_s = sse_heartbeat_s
        self._turn_decoder = BodyDecoder(TurnRequest)
        self._chat_decoder = BodyDecoder(ChatRequest)

    async def post_turn(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /v1/sessions/{session_id}/turns as a plain ASGI endpoint: the turn is the hot
        path, so it skips building a Request and a Response object."""
        session_id = check_session_id(scope["path_params"]["session_id"])
        turn_id = declared = last_event_id = authorization = None
        accept = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"idempotency-key":
                turn_id = check_turn_id(value.decode("latin-1"))
            elif name == b"content-length":
                declared = value.decode("latin-1")
            elif name == b"accept":
                accept = value
            elif name == b"last-event-id":
                last_event_id = value.decode("latin-1")
        after = event_number(last_event_id)  # checked on every turn: it is in the document
        principal = await self.auth.authenticate(authorization)
        session_id = scoped_session_id(principal.tenant, session_id)
        body = await read_body(receive, declared, self.max_body_bytes)
        req: TurnRequest = self._turn_decoder(body)
        self.limits.check_turn(req.message, req.metadata)
        service = self.service
        service.metrics.protocol_request("native")
        streamed = req.stream or b"text/event-stream" in accept
        after = event_number(last_event_id)  # checked on every turn POST, as documented
        if streamed and last_event_id and turn_id is None:
            raise TurnIdRequired(
                "Last-Event-ID resumes a turn: send the turn's id as Idempotency-Key"
            )
        if req.background:
            await self._background_turn(session_id, turn_id, req, send)
            return
        if streamed:
            try:
                response = await self._stream_turn(session_id, turn_id, req, after, principal)
            except StreamEnded:
                response = Response(status_code=204)
            await response(scope, receive, send)
            return
        turn_id = await service.enter(principal, session_id, turn_id)
        try:
            if req.on_disconnect == "cancel":
                record = await self._run_until_disconnect(session_id, turn_id, req, receive)
                if record is None:
                    return  # the client left; nobody to answer
            else:
                record = await service.run(
                    session_id,
                    req.message,
                    turn_id=turn_id,
                    metadata=req.metadata,
                    on_busy=req.on_busy,
                )
        finally:
            service.leave(principal, session_id, turn_id)
        payload = _encode(turn_out(record))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_JSON_HEADERS, (b"content-length", b"%d" % len(payload))],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _background_turn(
        self, session_id: str, turn_id: str | None, req: TurnRequest, send: Send
    ) -> None:
        """`background: true`: 202 with the turn id and its Location as soon as the turn is
        queued (or started here); the turn runs on, and its callback_url hears its end."""
        callbacks = self.callbacks
        url = req.callback_url

        async def on_end(
            sid: str, tid: str, record: TurnRecord | None, error: AgentHostError | None
        ) -> None:
            if url is not None:
                callbacks.turn_ended(url, sid, tid, record, error)

        turn_id = await self.service.submit(
            session_id,
            turn_id,
            req.message,
            metadata=req.metadata,
            on_busy=req.on_busy,
            on_end=on_end,
            callback_url=url,
        )
        public = public_session_id(session_id)
        payload = _encode(TurnAccepted(public, turn_id))
        location = f"/v1/sessions/{public}/turns/{turn_id}".encode()
        await send(
            {
                "type": "http.response.start",
                "status": 202,
                "headers": [
                    *_JSON_HEADERS,
                    (b"content-length", b"%d" % len(payload)),
                    (b"location", location),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _run_until_disconnect(
        self, session_id: str, turn_id: str | None, req: TurnRequest, receive: Receive
    ) -> TurnRecord | None:
        """A non-streamed turn with `on_disconnect=cancel`: stopped if the client leaves."""
        service = self.service
        turn_id = turn_id or new_turn_id()
        bind_turn(session_id, turn_id)
        task = asyncio.ensure_future(
            service.run(
                session_id,
                req.message,
                turn_id=turn_id,
                metadata=req.metadata,
                on_busy=req.on_busy,
            )
        )
        gone = False

        def left() -> None:
            nonlocal gone
            gone = True
            if not service.cancel(session_id, turn_id, "the client disconnected"):
                task.cancel()

        watcher = watch_disconnect(receive, left)
        try:
            return await task
        except (asyncio.CancelledError, AgentHostError):
            if gone:
                return None
            raise
        finally:
            watcher.cancel()

    async def _stream_turn(
        self,
        session_id: str,
        turn_id: str | None,
        req: TurnRequest,
        after: int,
        principal: Principal,
    ) -> Response:
        """SSE for one turn: numbered `chunk` events as the agent writes, then `done` or
        `error`. The turn runs in its own task and publishes to the stream broker, so it
        finishes and commits even if the client leaves (unless `on_disconnect=cancel`); the
        client resumes on any process by sending the same request again with its
        `Idempotency-Key` and `Last-Event-ID`, or with GET .../turns/{turn_id}/stream."""
        streamed = await self.service.stream(
            principal,
            session_id,
            turn_id,
            req.message,
            metadata=req.metadata,
            on_busy=req.on_busy,
            after=after,
        )
        if req.on_busy == "reject":
            # A busy session is a 409, not a 200 whose stream says so: wait for the lease
            # (one store step; a reject never waits for another turn) before answering.
            await streamed.admission()
        on_gone = streamed.cancel if req.on_disconnect == "cancel" else None
        return SSEResponse(streamed.events, self.service.metrics, self.sse_heartbeat_s, on_gone)

    async def resume_stream(self, request: Request) -> Response:
        """GET .../turns/{turn_id}/stream: the turn's events after `Last-Event-ID` (or
        `?after=`), from whichever process runs it."""
        session_id = await scoped_path_session(self.auth, request)
        turn_id = check_turn_id(request.path_params["turn_id"])
        after = event_number(request.headers.get("last-event-id") or single_query(request, "after"))
        try:
            events = await self.service.events(session_id, turn_id, after)
        except StreamEnded:
            # The client has the final event (EventSource reconnecting after the end):
            # 204 answers at once and stops EventSource from reconnecting again.
            return Response(status_code=204)
        return SSEResponse(events, self.service.metrics, self.sse_heartbeat_s)

    async def get_turn(self, request: Request) -> Response:
        session_id = await scoped_path_session(self.auth, request)
        turn_id = check_turn_id(request.path_params["turn_id"])
        record = await self.service.store.get_turn(session_id, turn_id)
        if record is None:
            if await self.service.is_waiting(session_id, turn_id):
                return json_response(TurnStatusOut(turn_id, "pending"))  # queued, not begun
            # Not queued any more: a worker may have begun, run and committed it between the
            # two reads (its mark goes after its commit), so the record is there now if so.
            record = await self.service.store.get_turn(session_id, turn_id)
        if record is None:
            raise TurnNotFound(f"no turn {turn_id} in session {public_session_id(session_id)}")
        error = (
            None if record.error is None else TurnErrorOut(record.error.code, record.error.message)
        )
        return json_response(TurnStatusOut(turn_id, record.status, record.response, error))

    async def chat(self, request: Request) -> Response:
        session_id = await scoped_path_session(self.auth, request)
        body = await request_body(request, self.max_body_bytes)
        req: ChatRequest = self._chat_decoder(body)
        self.limits.check_message(req.message)
        principal = await self.auth.authenticate(request.headers.get("authorization"))
        turn_id = idempotency_key(request) or new_turn_id()
        await self.service.gate.enter(principal, session_id, turn_id)
        try:
            record = await self.service.run(session_id, req.message, turn_id=turn_id)
        finally:
            self.service.gate.leave(principal, session_id, turn_id)
        return json_response(ChatResponse(record.response or ""))
