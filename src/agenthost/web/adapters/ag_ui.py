"""AG-UI over the turn service, for CopilotKit and any `HttpAgent`: `POST /ag-ui/v1/run` takes
a `RunAgentInput` and streams `RUN_STARTED`, `TEXT_MESSAGE_START`, `TEXT_MESSAGE_CONTENT`...,
`TEXT_MESSAGE_END`, then `RUN_FINISHED`, or `RUN_ERROR`, as server-sent events. A tool the
agent called ends the text message and is told as `TOOL_CALL_START`, `TOOL_CALL_ARGS`,
`TOOL_CALL_END` and `TOOL_CALL_RESULT`; text after it is a new message. An interrupt is a
`CUSTOM` event named `interrupt` whose value is what the agent asked.

The thread id is the session and the run id the turn id: a run sent again with the same
`runId` (a retry) returns the committed answer, never a second commit. Only the newest user
message of `messages` is read; agenthost's history is the agent's.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from agenthost.auth.authenticators import Authenticator
from agenthost.auth.principal import scoped_session_id
from agenthost.brokers.base import StreamEvent
from agenthost.core.errors import ValidationFailed
from agenthost.core.ids import check_session_id, check_turn_id
from agenthost.core.input_limits import InputLimits
from agenthost.turns.service import TurnService
from agenthost.turns.turn_events import decode_interrupt, decode_tool
from agenthost.web.adapters.events import chunk_text_json, final_error, final_turn
from agenthost.web.adapters.newest_user import ID_SCHEMA, no_text, user_messages_schema
from agenthost.web.requests import BodyDecoder, request_body
from agenthost.web.sse import SSE_HEADERS, SSEResponse

__all__ = ["AGUIRoutes", "AGUIRunFrames", "RunAgentInput"]

PROTOCOL = "ag_ui"

_encode = msgspec.json.encode


class AGUIMessage(msgspec.Struct):
    """A message of the input: `content` is text or a list of input parts."""

    role: str
    id: str = ""
    content: str | list[dict[str, Any]] | None = None


class RunAgentInput(msgspec.Struct):
    """What agenthost reads of AG-UI's `RunAgentInput` (tools, context, state and
    forwardedProps are accepted and not used)."""

    thread_id: Annotated[str, msgspec.Meta(extra_json_schema=ID_SCHEMA)] = msgspec.field(
        name="threadId"
    )
    run_id: Annotated[str, msgspec.Meta(extra_json_schema=ID_SCHEMA)] = msgspec.field(name="runId")
    messages: Annotated[list[AGUIMessage], msgspec.Meta(extra_json_schema=user_messages_schema())]


def _text(message: AGUIMessage) -> str:
    content = message.content
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(
        p["text"] for p in content if p.get("type") == "text" and isinstance(p.get("text"), str)
    )


class AGUIRunFrames:
    """A turn's events as AG-UI events, each one `data: {json}` line.

    A `reset` (the run goes again after its process died) ends the assistant message
    streamed so far, and the new attempt's text goes to a new message (`a-<runId>-<event
    number>`): AG-UI cannot take text back, so the void attempt stays a message of its own,
    and the new attempt's text is never appended to it."""

    __slots__ = ("ids", "message_id", "messages", "prefix", "run_id", "said", "started")

    def __init__(self, thread_id: str, run_id: str) -> None:
        self.ids = b'"threadId":%s,"runId":%s' % (_encode(thread_id), _encode(run_id))
        self.run_id = run_id
        self.prefix = f"a-{run_id}"  # a new attempt after a reset names its own messages
        self.message_id = b""  # the open text message's id (JSON), b"" when none is open
        self.messages = 0  # text messages opened: a tool call ends one
        self.started = False
        self.said = False

    def _start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        return b'data: {"type":"RUN_STARTED",%s}\n\n' % self.ids

    def _open(self) -> bytes:
        head = self._start()
        if self.message_id:
            return head
        self.messages += 1
        suffix = "" if self.messages == 1 else f"-{self.messages}"
        self.message_id = _encode(f"{self.prefix}{suffix}")
        return head + (
            b'data: {"type":"TEXT_MESSAGE_START","messageId":%s,"role":"assistant"}\n\n'
            % self.message_id
        )

    def _close(self) -> bytes:
        if not self.message_id:
            return b""
        end = b'data: {"type":"TEXT_MESSAGE_END","messageId":%s}\n\n' % self.message_id
        self.message_id = b""
        return end

    def _tool(self, event: StreamEvent) -> bytes:
        tool = decode_tool(event.data)
        call = {"toolCallId": tool.call_id}
        result = tool.result if isinstance(tool.result, str) else _encode(tool.result).decode()
        events = (
            {"type": "TOOL_CALL_START", **call, "toolCallName": tool.name},
            {"type": "TOOL_CALL_ARGS", **call, "delta": _encode(tool.arguments).decode()},
            {"type": "TOOL_CALL_END", **call},
            {"type": "TOOL_CALL_RESULT", "messageId": f"t-{tool.call_id}", **call,
             "content": result, "role": "tool"},
        )  # fmt: skip
        return b"".join(b"data: %s\n\n" % _encode(e) for e in events)

    def _content(self, text_json: bytes) -> bytes:
        self.said = True
        return b'data: {"type":"TEXT_MESSAGE_CONTENT","messageId":%s,"delta":%s}\n\n' % (
            self.message_id,
            text_json,
        )

    def __call__(self, event: StreamEvent) -> bytes:
        kind = event.kind
        if kind == "chunk":
            head = self._open()
            return head + self._content(chunk_text_json(event.data))
        if kind == "tool":
            return self._start() + self._close() + self._tool(event)
        if kind == "interrupt":
            interrupt = decode_interrupt(event.data)
            value = {"value": interrupt.value, "id": interrupt.id}
            custom = _encode({"type": "CUSTOM", "name": "interrupt", "value": value})
            return self._start() + self._close() + b"data: %s\n\n" % custom
        if kind == "done":
            response = final_turn(event).response
            out = self._start()
            if not self.said and response:  # a replay whose chunks expired: the answer whole
                out += self._open()
                out += self._content(_encode(response))
            elif not self.said and self.messages == 0:
                out += self._open()  # an empty answer is still one (empty) message
            return out + self._close() + b'data: {"type":"RUN_FINISHED",%s}\n\n' % self.ids
        if kind == "error":
            err = final_error(event)
            body = _encode({"type": "RUN_ERROR", "message": err.message, "code": err.code})
            return self._start() + self._close() + b"data: %s\n\n" % body
        return self._restart(event.seq)  # reset

    def _restart(self, seq: int) -> bytes:
        if not self.started:
            return b""  # nothing said yet: the new attempt opens its message
        end = self._close()
        self.prefix = f"a-{self.run_id}-{seq}"
        self.messages = 0
        self.said = False
        return end


class AGUIRoutes:
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
        self._decoder = BodyDecoder(RunAgentInput)

    async def run(self, request: Request) -> Response:
        principal = await self.auth.authenticate(request.headers.get("authorization"))
        body = await request_body(request, self.max_body_bytes)
        run: RunAgentInput = self._decoder(body)
        users = [m for m in run.messages if m.role == "user"]
        if not users:
            raise ValidationFailed("messages has no user message")
        text = _text(users[-1])
        if not text:
            raise no_text()
        self.limits.check_message(text)
        public_id = check_session_id(run.thread_id)
        session_id = scoped_session_id(principal.tenant, public_id)
        turn_id = check_turn_id(run.run_id)
        service = self.service
        service.metrics.protocol_request(PROTOCOL)
        streamed = await service.stream(principal, session_id, turn_id, text, skip_void=True)
        frames = AGUIRunFrames(public_id, turn_id)
        return SSEResponse(streamed.events, service.metrics, frame=frames, headers=SSE_HEADERS)
