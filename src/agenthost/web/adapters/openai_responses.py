"""The OpenAI Responses API over the turn service: `POST /openai/v1/responses` (a response
object, SSE events with `stream: true`, or at once with `background: true` while the turn
runs on) and `GET /openai/v1/responses/{id}` (its status and answer; with `stream=true` its
events, after `starting_after`, from any process).

`conversation` names the session; `previous_response_id` continues that response's session;
with neither, the response opens a session of its own. A response id names its session and
turn (`resp_` + the two, base64url), so any process finds it without a table, and a tenant
can only reach its own. The turn id is the `Idempotency-Key` header, else a new one.

A streamed response's `sequence_number` is agenthost's event number: each text delta
carries its chunk's number and the closing events the final event's, while the opening
events (`response.created`, ...) are number 0. So `starting_after=N` resumes exactly where
agenthost's stream does, and a resumed stream (N > 0) starts without the opening events.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from agenthost.auth.authenticators import Authenticator
from agenthost.auth.principal import Principal, scoped_session_id
from agenthost.brokers.base import StreamEvent
from agenthost.core.errors import AgentHostError, TurnNotFound, ValidationFailed
from agenthost.core.ids import check_session_id, check_turn_id, new_session_id, new_turn_id
from agenthost.core.input_limits import InputLimits
from agenthost.stores.base import TurnRecord
from agenthost.turns.service import StreamEnded, TurnService
from agenthost.web.adapters.events import chunk_text_json, final_error, final_turn
from agenthost.web.adapters.newest_user import (
    ID_SCHEMA,
    NEWEST_USER,
    no_text,
    user_messages_schema,
)
from agenthost.web.error_responses import json_response
from agenthost.web.requests import BodyDecoder, event_number, request_body
from agenthost.web.sse import SSE_HEADERS, SSEResponse

__all__ = [
    "OpenAIResponsesRoutes",
    "ResponseObject",
    "ResponsesRequest",
    "response_id",
    "response_ref",
]

PROTOCOL = "openai_responses"

_encode = msgspec.json.encode


class InputItem(msgspec.Struct):
    """A message item of `input`: `content` is text or a list of parts."""

    role: str = "user"
    type: str = "message"
    content: str | list[dict[str, Any]] | None = None


# A message item is a user message unless it says otherwise (`role` and `type` default).
_USER_ITEM = {
    "type": "object",
    "properties": {"role": {"const": "user"}, "type": {"const": "message"}},
}
_USER_ITEMS = msgspec.Meta(extra_json_schema=user_messages_schema(_USER_ITEM))
_CONVERSATION_OBJECT = {"properties": {"id": {"type": "string", **ID_SCHEMA}}, "required": ["id"]}


class ResponsesRequest(msgspec.Struct):
    """What agenthost reads of a Responses request (other fields are ignored)."""

    input: Annotated[str, msgspec.Meta(min_length=1)] | Annotated[list[InputItem], _USER_ITEMS]
    model: str = ""
    conversation: (
        Annotated[str, msgspec.Meta(extra_json_schema=ID_SCHEMA)]
        | Annotated[dict[str, Any], msgspec.Meta(extra_json_schema=_CONVERSATION_OBJECT)]
        | None
    ) = None
    previous_response_id: str | None = None
    stream: bool = False
    background: bool = False


class OutputText(msgspec.Struct):
    text: str
    type: str = "output_text"
    annotations: list[Any] = []


class OutputMessage(msgspec.Struct):
    id: str
    content: list[OutputText]
    type: str = "message"
    role: str = "assistant"
    status: str = "completed"


class ResponseError(msgspec.Struct):
    code: str
    message: str


class ResponseObject(msgspec.Struct):
    """A response: `status` is in_progress, completed or failed."""

    id: str
    created_at: int
    model: str
    status: str
    output: list[OutputMessage]
    conversation: dict[str, str] | None
    error: ResponseError | None = None
    object: str = "response"
    background: bool = False
    previous_response_id: str | None = None
    incomplete_details: None = None
    instructions: None = None
    metadata: dict[str, str] = {}
    parallel_tool_calls: bool = False
    tool_choice: str = "none"
    tools: list[Any] = []


def response_id(session_id: str, turn_id: str) -> str:
    """`resp_` + base64url("<session>\\n<turn>") of the client's session id."""
    raw = f"{session_id}\n{turn_id}".encode()
    return "resp_" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def response_ref(rid: str) -> tuple[str, str]:
    """(session id, turn id) a response id names; 404 for one agenthost never made."""
    token = rid.removeprefix("resp_")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        session_id, turn_id = raw.split("\n")
        return check_session_id(session_id), check_turn_id(turn_id)
    except (binascii.Error, UnicodeDecodeError, ValueError, AgentHostError):
        raise TurnNotFound(f"no response {rid[:80]}") from None


def _input_text(req: ResponsesRequest) -> str:
    if isinstance(req.input, str):
        return req.input
    users = [i for i in req.input if i.role == "user" and i.type == "message"]
    if not users:
        raise ValidationFailed("input has no user message")  # the schema's `contains`
    content = users[-1].content
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(
        p["text"]
        for p in content
        if p.get("type") in ("input_text", "text") and isinstance(p.get("text"), str)
    )


def _conversation_id(req: ResponsesRequest) -> str | None:
    conv = req.conversation
    if isinstance(conv, dict):
        value = conv.get("id")
        if not isinstance(value, str):
            raise ValidationFailed("conversation.id must be a string")
        return value
    return conv


_IN_PROGRESS = b'"status":"in_progress","output":[]'


def _event(kind: bytes, seq: int, body: bytes) -> bytes:
    return b'event: %s\ndata: {"type":"%s","sequence_number":%d,%s}\n\n' % (kind, kind, seq, body)


class ResponseFrames:
    """A turn's events as Responses streaming events (`event:` and `data:` lines). What every
    turn repeats (the response as JSON, the delta event's head) is built once, and the answer
    is encoded once for the four closing events, so a chunk costs one bytes format.

    A `reset` (the turn runs again after its process died: the text streamed so far is
    void) opens a new output message item at the next `output_index` (`msg_...-<event
    number>`), which the new attempt's deltas fill; the completed response holds that
    item alone."""

    __slots__ = ("base_json", "base_msg_id", "delta_head", "delta_mid", "index", "msg_id", "opened")

    def __init__(self, base: ResponseObject, after: int) -> None:
        self.base_msg_id = base.id.replace("resp_", "msg_", 1)
        self.base_json = _encode(base)  # in_progress, no output yet
        if _IN_PROGRESS not in self.base_json:
            raise ValueError("a base response must be in_progress with no output")
        self.delta_head = (
            b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
            b'"sequence_number":'
        )
        self._item(0, self.base_msg_id)
        self.opened = after > 0  # a resumed stream: the client has the opening events

    def _item(self, index: int, msg_id: str) -> None:
        """The output item the deltas and closing events are about from now on."""
        self.index = index
        self.msg_id = _encode(msg_id)
        self.delta_mid = b',"item_id":%s,"output_index":%d,"content_index":0,"delta":' % (
            self.msg_id,
            index,
        )

    def _item_added(self, seq: int) -> bytes:
        where = b'"item_id":%s,"output_index":%d,"content_index":0' % (self.msg_id, self.index)
        return _event(
            b"response.output_item.added",
            seq,
            b'"output_index":%d,"item":{"id":%s,"type":"message","role":"assistant",'
            b'"status":"in_progress","content":[]}' % (self.index, self.msg_id),
        ) + _event(
            b"response.content_part.added",
            seq,
            where + b',"part":{"type":"output_text","text":"","annotations":[]}',
        )

    def _open(self) -> bytes:
        if self.opened:
            return b""
        self.opened = True
        response = b'"response":%s' % self.base_json
        return (
            _event(b"response.created", 0, response)
            + _event(b"response.in_progress", 0, response)
            + self._item_added(0)
        )

    def __call__(self, event: StreamEvent) -> bytes:
        kind = event.kind
        if kind == "chunk":
            body = b"%s%d%s%s}\n\n" % (
                self.delta_head,
                event.seq,
                self.delta_mid,
                chunk_text_json(event.data),
            )
            return self._open() + body if not self.opened else body
        if kind == "done":
            return self._open() + self._closing(event.seq, _encode(final_turn(event).response))
        if kind == "error":
            err = final_error(event)
            failed = self.base_json.replace(
                _IN_PROGRESS,
                b'"status":"failed","output":[]',
                1,
            ).replace(
                b'"error":null', b'"error":%s' % _encode(ResponseError(err.code, err.message)), 1
            )
            return self._open() + _event(b"response.failed", event.seq, b'"response":%s' % failed)
        # reset: the new attempt writes a new item
        if not self.opened:
            return b""  # the client has seen nothing of the void attempt
        self._item(self.index + 1, f"{self.base_msg_id}-{event.seq}")
        return self._item_added(event.seq)

    def _closing(self, seq: int, text_json: bytes) -> bytes:
        where = b'"item_id":%s,"output_index":%d,"content_index":0' % (self.msg_id, self.index)
        part = b'{"type":"output_text","text":%s,"annotations":[]}' % text_json
        item = (
            b'{"id":%s,"content":[%s],"type":"message","role":"assistant","status":"completed"}'
            % (
                self.msg_id,
                part,
            )
        )
        completed = self.base_json.replace(
            _IN_PROGRESS, b'"status":"completed","output":[%s]' % item, 1
        )
        return (
            _event(b"response.output_text.done", seq, where + b',"text":%s' % text_json)
            + _event(b"response.content_part.done", seq, where + b',"part":' + part)
            + _event(
                b"response.output_item.done", seq, b'"output_index":%d,"item":' % self.index + item
            )
            + _event(b"response.completed", seq, b'"response":' + completed)
        )


class OpenAIResponsesRoutes:
    def __init__(
        self,
        service: TurnService,
        auth: Authenticator,
        limits: InputLimits,
        *,
        model: str,
        max_body_bytes: int,
    ) -> None:
        self.service = service
        self.auth = auth
        self.limits = limits
        self.model = model
        self.max_body_bytes = max_body_bytes
        self._decoder = BodyDecoder(ResponsesRequest)

    def _object(
        self, public_id: str, turn_id: str, model: str, *, background: bool = False,
        previous: str | None = None,
    ) -> ResponseObject:  # fmt: skip
        return ResponseObject(
            response_id(public_id, turn_id),
            int(time.time()),
            model,
            "in_progress",
            [],
            {"id": public_id},
            background=background,
            previous_response_id=previous,
        )

    async def create(self, request: Request) -> Response:
        principal = await self.auth.authenticate(request.headers.get("authorization"))
        body = await request_body(request, self.max_body_bytes)
        req: ResponsesRequest = self._decoder(body)
        text = _input_text(req)
        if not text:
            raise no_text(f"{NEWEST_USER} of input")
        self.limits.check_message(text)
        public_id = _conversation_id(req)
        if public_id is None and req.previous_response_id:
            public_id = response_ref(req.previous_response_id)[0]
        public_id = check_session_id(public_id or new_session_id())
        key = request.headers.get("idempotency-key")
        turn_id = check_turn_id(key) if key else new_turn_id()
        base = self._object(
            public_id,
            turn_id,
            req.model or self.model,
            background=req.background,
            previous=req.previous_response_id,
        )
        self.service.metrics.protocol_request(PROTOCOL)
        session_id = scoped_session_id(principal.tenant, public_id)
        if req.stream or req.background:
            return await self._start(principal, session_id, turn_id, text, base, req.stream)
        service = self.service
        turn_id = await service.enter(principal, session_id, turn_id) or turn_id
        try:
            record = await service.run(session_id, text, turn_id=turn_id, on_busy="enqueue")
        finally:
            service.leave(principal, session_id, turn_id)
        return json_response(_from_record(base, record))

    async def _start(
        self, principal: Principal, session_id: str, turn_id: str, text: str,
        base: ResponseObject, stream: bool,
    ) -> Response:  # fmt: skip
        service = self.service
        streamed = await service.stream(principal, session_id, turn_id, text, skip_void=True)
        if not stream:  # background: the turn runs on; its events stay readable
            return json_response(base)
        return SSEResponse(
            streamed.events, service.metrics, frame=ResponseFrames(base, 0), headers=SSE_HEADERS
        )

    async def retrieve(self, request: Request) -> Response:
        principal = await self.auth.authenticate(request.headers.get("authorization"))
        public_id, turn_id = response_ref(request.path_params["response_id"])
        session_id = scoped_session_id(principal.tenant, public_id)
        record = await self.service.store.get_turn(session_id, turn_id)
        if record is None:
            raise TurnNotFound(f"no response {request.path_params['response_id'][:80]}")
        base = self._object(public_id, turn_id, self.model)
        base.created_at = int(record.created_at)
        if request.query_params.get("stream") not in ("true", "1"):
            return json_response(_from_record(base, record))
        after = event_number(request.query_params.get("starting_after"))
        try:
            # Followed where it runs, run again here if its process died.
            streamed = await self.service.follow(principal, session_id, turn_id, after)
        except StreamEnded:  # starting_after is the final event: nothing more to send
            return Response(status_code=204)
        return SSEResponse(
            streamed.events,
            self.service.metrics,
            frame=ResponseFrames(base, after),
            headers=SSE_HEADERS,
        )


def _from_record(base: ResponseObject, record: TurnRecord) -> ResponseObject:
    if record.status == "completed":
        message = OutputMessage(
            base.id.replace("resp_", "msg_", 1), [OutputText(record.response or "")]
        )
        return msgspec.structs.replace(base, status="completed", output=[message])
    if record.status == "failed":
        err = record.error
        error = ResponseError(err.code, err.message) if err else ResponseError("failed", "failed")
        return msgspec.structs.replace(base, status="failed", error=error)
    return base  # pending or running: in_progress
