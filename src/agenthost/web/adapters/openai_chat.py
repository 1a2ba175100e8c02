"""The OpenAI Chat Completions API over the turn service: `POST /openai/v1/chat/completions`
(a JSON answer, or with `stream: true` SSE chunks ending in `data: [DONE]`) and
`GET /openai/v1/models` (the hosted agent as one model), so Open WebUI, LibreChat and the
`openai` SDK talk to an agent with no code of their own.

The client sends the whole conversation each time; agenthost's own history is the truth, so
only the newest user message becomes the turn (`conversation.py` says which session and turn
it is). Title and tag requests that Open WebUI and LibreChat send to the same model (Open
WebUI's `### Task:` prompts, or any request naming the task model) go to the LLM directly,
never into the session.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from agenthost.auth.authenticators import Authenticator
from agenthost.auth.principal import scoped_session_id
from agenthost.brokers.base import StreamEvent
from agenthost.core.input_limits import InputLimits
from agenthost.llm.base import LLMClient
from agenthost.turns.service import TurnService
from agenthost.web.adapters.conversation import ChatMessageIn, conversation_ids, message_text
from agenthost.web.adapters.events import chunk_text_json, final_error, final_turn
from agenthost.web.adapters.newest_user import user_messages_schema
from agenthost.web.error_responses import json_response
from agenthost.web.requests import BodyDecoder, request_body
from agenthost.web.sse import SSE_HEADERS, SSEResponse

__all__ = [
    "ChatCompletion",
    "ChatCompletionRequest",
    "ModelList",
    "OpenAIChatRoutes",
    "is_task_request",
]

PROTOCOL = "openai_chat"
TASK_PREFIX = "### Task:"
"""How Open WebUI's title, tag and follow-up prompts begin."""

_encode = msgspec.json.encode


class ChatCompletionRequest(msgspec.Struct):
    """What agenthost reads of a chat-completions request (other fields are ignored)."""

    messages: Annotated[list[ChatMessageIn], msgspec.Meta(extra_json_schema=user_messages_schema())]
    model: str = ""
    stream: bool = False
    user: str | None = None


class AssistantMessage(msgspec.Struct):
    role: str
    content: str


class Choice(msgspec.Struct):
    index: int
    message: AssistantMessage
    finish_reason: str


class ChatCompletion(msgspec.Struct):
    """A non-streamed answer; `id` is `chatcmpl-<turn id>`."""

    id: str
    object: str
    created: int
    model: str
    choices: list[Choice]


class ModelOut(msgspec.Struct):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "agenthost"


class ModelList(msgspec.Struct):
    data: list[ModelOut]
    object: str = "list"


def is_task_request(req: ChatCompletionRequest, task_model: str) -> bool:
    """A title/tag/follow-up request of a chat UI, not a turn of the conversation."""
    if req.model == task_model:
        return True
    users = [m for m in req.messages if m.role == "user"]
    return bool(users) and message_text(users[-1]).lstrip().startswith(TASK_PREFIX)


def completion(turn_id: str, model: str, text: str) -> ChatCompletion:
    message = AssistantMessage("assistant", text)
    return ChatCompletion(
        f"chatcmpl-{turn_id}",
        "chat.completion",
        int(time.time()),
        model,
        [Choice(0, message, "stop")],
    )


class ChunkFrames:
    """A turn's events as `chat.completion.chunk` SSE lines: the first carries the role, the
    final one `finish_reason`, then `data: [DONE]`; an error is an `error` object (the
    `openai` SDK raises it)."""

    __slots__ = ("head", "model", "said", "turn_id")

    def __init__(self, turn_id: str, model: str) -> None:
        self.turn_id = turn_id
        self.model = model
        self.head = b'data: {"id":"chatcmpl-%s","object":"chat.completion.chunk","created":%d,' % (
            turn_id.encode(),
            int(time.time()),
        ) + b'"model":%s,"choices":[{"index":0,' % _encode(model)
        self.said = False

    def _delta(self, text_json: bytes, finish: bytes = b"null") -> bytes:
        role = b"" if self.said else b'"role":"assistant",'
        self.said = True
        return self.head + b'"delta":{%s"content":%s},"finish_reason":%s}]}\n\n' % (
            role,
            text_json,
            finish,
        )

    def __call__(self, event: StreamEvent) -> bytes:
        kind = event.kind
        if kind == "chunk":
            return self._delta(chunk_text_json(event.data))
        if kind == "done":
            # A replay whose chunks expired has only the answer: send it whole.
            text = b'""' if self.said else _encode(final_turn(event).response)
            return self._delta(text, b'"stop"') + b"data: [DONE]\n\n"
        if kind == "error":
            err = final_error(event)
            body = {"error": {"message": err.message, "type": "agenthost_error", "code": err.code}}
            return b"data: %s\n\ndata: [DONE]\n\n" % _encode(body)
        return b""  # reset: the chat-completions stream cannot take text back


def task_frames(turn_id: str, model: str, text: str) -> bytes:
    frames = ChunkFrames(turn_id, model)
    return frames._delta(_encode(text), b'"stop"') + b"data: [DONE]\n\n"


class OpenAIChatRoutes:
    def __init__(
        self,
        service: TurnService,
        auth: Authenticator,
        limits: InputLimits,
        llm: LLMClient,
        *,
        model: str,
        task_model: str,
        max_body_bytes: int,
    ) -> None:
        self.service = service
        self.auth = auth
        self.limits = limits
        self.llm = llm
        self.model = model
        self.task_model = task_model
        self.max_body_bytes = max_body_bytes
        self._decoder = BodyDecoder(ChatCompletionRequest)

    async def models(self, request: Request) -> Response:
        await self.auth.authenticate(request.headers.get("authorization"))
        return json_response(ModelList([ModelOut(self.model), ModelOut(self.task_model)]))

    async def completions(self, request: Request) -> Response:
        principal = await self.auth.authenticate(request.headers.get("authorization"))
        body = await request_body(request, self.max_body_bytes)
        req: ChatCompletionRequest = self._decoder(body)
        service = self.service
        service.metrics.protocol_request(PROTOCOL)
        if is_task_request(req, self.task_model):
            return await self._task(req)
        headers = dict(request.headers)
        public_id, turn_id, text = conversation_ids(headers, req.messages, req.user)
        self.limits.check_message(text)
        session_id = scoped_session_id(principal.tenant, public_id)
        model = req.model or self.model
        if req.stream:
            streamed = await service.stream(principal, session_id, turn_id, text, skip_void=True)
            frames = ChunkFrames(turn_id, model)
            return SSEResponse(streamed.events, service.metrics, frame=frames, headers=SSE_HEADERS)
        turn_id = await service.enter(principal, session_id, turn_id) or turn_id
        try:
            record = await service.run(session_id, text, turn_id=turn_id, on_busy="enqueue")
        finally:
            service.leave(principal, session_id, turn_id)
        return json_response(completion(turn_id, model, record.response or ""))

    async def _task(self, req: ChatCompletionRequest) -> Response:
        """Answer a chat UI's housekeeping prompt with the LLM itself, outside any session."""
        self.service.engine.check_admission()
        messages: list[dict[str, Any]] = [
            {"role": m.role, "content": message_text(m)} for m in req.messages
        ]
        text = await self.llm.complete(messages)
        turn_id = "task-" + str(time.time_ns())
        model = req.model or self.task_model
        if not req.stream:
            return json_response(completion(turn_id, model, text))
        return Response(
            task_frames(turn_id, model, text),
            headers={"cache-control": "no-cache"},
            media_type="text/event-stream",
        )
