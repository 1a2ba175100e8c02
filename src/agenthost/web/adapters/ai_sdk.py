"""The Vercel AI SDK's UI message stream (protocol v1) over the turn service, for `useChat`
and anything built on it (assistant-ui): `POST /ai-sdk/v1/chat` runs a turn and streams
`start`, `text-start`, `text-delta`..., `text-end`, `finish` (or `error`), then `[DONE]`;
a tool the agent called is a `tool-input-available` and a `tool-output-available` part
between text parts, and an interrupt a `data-interrupt` part (the UI stream's own data part);
`GET /ai-sdk/v1/chat/{id}/stream` is the resume `useChat` calls after a reload or a lost
connection: the running turn's stream from its start (the SDK's transport treats a resumed
stream as a replay), run again here if its process died, or 204 when no turn runs.

The chat id is the session; the id of the newest user message is the turn id, so a retry and
a "regenerate" (the same user message sent again) get the committed answer back instead of
a second commit.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from agenthost.auth.authenticators import Authenticator
from agenthost.auth.principal import Principal, scoped_session_id
from agenthost.brokers.base import StreamEvent
from agenthost.core.errors import TurnNotFound, ValidationFailed
from agenthost.core.ids import check_session_id
from agenthost.core.input_limits import InputLimits
from agenthost.turns.service import TurnService
from agenthost.turns.turn_events import decode_interrupt, decode_tool
from agenthost.web.adapters.events import chunk_text_json, final_error, final_turn
from agenthost.web.adapters.newest_user import (
    ID_SCHEMA,
    check_message_id,
    no_text,
    user_messages_schema,
)
from agenthost.web.requests import BodyDecoder, request_body
from agenthost.web.sse import SSE_HEADERS, SSEResponse

__all__ = ["AISDKChatRequest", "AISDKRoutes", "UIStreamFrames"]

PROTOCOL = "ai_sdk"
HEADERS = [*SSE_HEADERS, (b"x-vercel-ai-ui-message-stream", b"v1")]

_encode = msgspec.json.encode


class UIMessage(msgspec.Struct):
    """A `UIMessage`: its id, role and parts (only text parts are read)."""

    role: str
    id: str = ""
    parts: list[dict[str, Any]] = []


class AISDKChatRequest(msgspec.Struct):
    """What `DefaultChatTransport` posts (other fields of a custom `body` are ignored)."""

    id: Annotated[str, msgspec.Meta(extra_json_schema=ID_SCHEMA)]
    messages: Annotated[
        list[UIMessage], msgspec.Meta(extra_json_schema=user_messages_schema(needs_id=True))
    ]
    trigger: str = "submit-message"
    message_id: str | None = msgspec.field(default=None, name="messageId")


def _text(message: UIMessage) -> str:
    return "".join(
        p["text"]
        for p in message.parts
        if p.get("type") == "text" and isinstance(p.get("text"), str)
    )


class UIStreamFrames:
    """A turn's events as UI message stream chunks (`data: {json}` lines).

    A `reset` (the turn runs again after its process died, and the text sent so far is
    void) cannot take text back in this protocol, so it restarts the message: the open text
    part ends, and a `start` with a new `messageId` opens the new attempt's message.
    `readUIMessageStream` and `useChat`'s resume start a message afresh when its id
    changes, so the client holds the new attempt's text once, not after the void text."""

    __slots__ = (
        "first_id",
        "message_id",
        "parts",
        "prefix",
        "said",
        "started",
        "text_id",
        "turn_id",
    )

    def __init__(self, turn_id: str, message_id: str | None = None) -> None:
        self.turn_id = turn_id
        self.prefix = f"text-{turn_id}"  # text part ids; a new attempt after a reset has its own
        self.first_id = self.message_id = message_id or f"a-{turn_id}"
        self.text_id = b""  # the open text part's id (JSON), b"" when none is open
        self.parts = 0  # text parts opened: a tool call ends one, the next text opens another
        self.started = False
        self.said = False

    def _restart(self, seq: int) -> bytes:
        if not self.started:
            return b""  # nothing said yet: the new attempt opens the message
        end = self._close()
        self.message_id = f"{self.first_id}-{seq}"
        self.prefix = f"text-{self.turn_id}-{seq}"
        self.parts = 0
        self.started = self.said = False
        return end + self._start()

    def _start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        return b"data: %s\n\n" % _encode({"type": "start", "messageId": self.message_id})

    def _open(self) -> bytes:
        head = self._start()
        if self.text_id:
            return head
        self.parts += 1
        name = self.prefix if self.parts == 1 else f"{self.prefix}-{self.parts}"
        self.text_id = _encode(name)
        return head + b'data: {"type":"text-start","id":%s}\n\n' % self.text_id

    def _close(self) -> bytes:
        if not self.text_id:
            return b""
        end = b'data: {"type":"text-end","id":%s}\n\n' % self.text_id
        self.text_id = b""
        return end

    def _delta(self, text_json: bytes) -> bytes:
        self.said = True
        return b'data: {"type":"text-delta","id":%s,"delta":%s}\n\n' % (self.text_id, text_json)

    def __call__(self, event: StreamEvent) -> bytes:
        kind = event.kind
        if kind == "chunk":
            head = self._open()
            return head + self._delta(chunk_text_json(event.data))
        if kind == "tool":
            tool = decode_tool(event.data)
            ids = {"toolCallId": tool.call_id}
            parts = (
                {"type": "tool-input-available", **ids, "toolName": tool.name,
                 "input": tool.arguments},
                {"type": "tool-output-available", **ids, "output": tool.result},
            )  # fmt: skip
            return (
                self._start()
                + self._close()
                + b"".join(b"data: %s\n\n" % _encode(p) for p in parts)
            )
        if kind == "interrupt":
            interrupt = decode_interrupt(event.data)
            part = {
                "type": "data-interrupt",
                "data": {"value": interrupt.value, "id": interrupt.id},
            }
            return self._start() + self._close() + b"data: %s\n\n" % _encode(part)
        if kind == "done":
            response = final_turn(event).response
            head = b""
            if not self.said and response:  # a replay whose chunks expired: the answer whole
                head = self._open()
                head += self._delta(_encode(response))
            elif not self.said and not self.started:
                head = self._open()  # an empty answer is still one (empty) text part
            head = self._start() + head + self._close()
            return head + b'data: {"type":"finish","finishReason":"stop"}\n\ndata: [DONE]\n\n'
        if kind == "error":
            err = final_error(event)
            body = _encode({"type": "error", "errorText": f"{err.code}: {err.message}"})
            return self._start() + self._close() + b"data: %s\n\ndata: [DONE]\n\n" % body
        return self._restart(event.seq)  # reset


class AISDKRoutes:
    def __init__(
        self,
        service: TurnService,
        auth: Authenticator,
        limits: InputLimits,
        *,
        max_body_bytes: int,
    ) -> None:
        self.service = service
        self.auth = auth
        self.limits = limits
        self.max_body_bytes = max_body_bytes
        self._decoder = BodyDecoder(AISDKChatRequest)

    async def chat(self, request: Request) -> Response:
        principal = await self.auth.authenticate(request.headers.get("authorization"))
        body = await request_body(request, self.max_body_bytes)
        req: AISDKChatRequest = self._decoder(body)
        users = [m for m in req.messages if m.role == "user"]
        if not users:
            raise ValidationFailed("messages has no user message")
        text = _text(users[-1])
        if not text:
            raise no_text()
        turn_id = check_message_id(users[-1].id)
        self.limits.check_message(text)
        session_id = scoped_session_id(principal.tenant, check_session_id(req.id))
        message_id = req.message_id if req.trigger == "regenerate-message" else None
        self.service.metrics.protocol_request(PROTOCOL)
        return await self._stream(principal, session_id, turn_id, text, message_id)

    async def _stream(
        self, principal: Principal, session_id: str, turn_id: str, text: str, message_id: str | None
    ) -> Response:
        service = self.service
        streamed = await service.stream(principal, session_id, turn_id, text, skip_void=True)
        frames = UIStreamFrames(turn_id, message_id)
        return SSEResponse(streamed.events, service.metrics, frame=frames, headers=HEADERS)

    async def resume(self, request: Request) -> Response:
        """The chat's newest turn if it has not ended, from its first event: followed where
        it runs, or run again here if its process died; 204 when its newest turn ended."""
        principal = await self.auth.authenticate(request.headers.get("authorization"))
        public_id = check_session_id(request.path_params["chat_id"])
        session_id = scoped_session_id(principal.tenant, public_id)
        service = self.service
        turn_id = await service.store.unfinished_turn(session_id)
        if turn_id is None:
            return Response(status_code=204)
        try:
            streamed = await service.follow(principal, session_id, turn_id)
        except TurnNotFound:  # it ended and its session went meanwhile
            return Response(status_code=204)
        frames = UIStreamFrames(turn_id)
        return SSEResponse(streamed.events, service.metrics, frame=frames, headers=HEADERS)
