"""`WS /v1/sessions/{session_id}/ws`: turns and resumes over one WebSocket per client.

Client frames: `{"type": "turn", "message", "turn_id"?, "metadata"?, "on_busy"?, "after"?,
"on_disconnect"?}` and `{"type": "resume", "turn_id", "after"}`. Server frames: `{"type":
"chunk", "turn_id", "seq", "text"}`, `{"type": "tool", "turn_id", "seq", "call_id", "name",
"arguments", "result"}` (the agent called a tool), `{"type": "interrupt", "turn_id", "seq",
"value", "id"}` (the agent asks the human; the next turn answers), `{"type": "reset", "turn_id",
"seq", "reason"}` (the turn runs again after its process died: drop its text so far), `{"type":
"done", "turn_id", "seq", "session_id", "response"}` and `{"type": "error", "code", "message",
"turn_id"?}`. Turns publish through the stream broker, so a client whose connection dropped
resumes on any process with the last `seq` it saw: `resume` only reads; a `turn` frame with the
same `turn_id` and `after` also runs the turn again if the process running it died.

Each connection has a bounded send buffer: a client that cannot keep up is closed with
4001 (`slow_consumer`) instead of growing the server's memory. A connection idle for
`--ws-idle-timeout` is closed with 1000. While the process drains, new connections are
refused and open ones are closed with 1012 once their turns are done.

A frame that is not a usable client frame (bad JSON, wrong shape, unknown type, bad id, a
message or metadata over its limit) gets an error frame and the connection stays. A client
that breaks the transport's rules gets an error frame, then the connection is closed:

| close code | reason | when |
|---|---|---|
| 1000 | normal | the client closed, or the connection idled for --ws-idle-timeout |
| 1003 | `binary_frame` | a binary frame: client frames are JSON text |
| 1008 | `frame_rate_exceeded` | more frames than --ws-max-frames-per-s (token bucket) |
| 1009 | `frame_too_large` | a frame over --ws-max-frame-bytes (under uvicorn, its own reason) |
| 1012 | service restart | the process drains: reconnect, to another process |
| 4001 | `slow_consumer` | the client read too slowly: its send buffer (frames or bytes) filled |
| 4004 | `invalid_session_id` | the session id in the URL is not valid |
| 4401 | `unauthorized` | no valid key or token at the handshake, or no longer (every turn frame) |
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from agenthost.auth.authenticators import Authenticator
from agenthost.auth.principal import Principal, scoped_session_id
from agenthost.brokers.base import StreamEvent, forward
from agenthost.core.errors import (
    AgentHostError,
    BadFrame,
    BinaryFrame,
    FrameRateExceeded,
    FrameTooLarge,
    JSONTooDeep,
    TurnIdRequired,
)
from agenthost.core.ids import check_session_id, check_turn_id
from agenthost.core.input_limits import FrameRateLimiter, InputLimits
from agenthost.core.settings import Settings
from agenthost.observability.metrics import Metrics
from agenthost.turns.service import StreamedTurn, StreamEnded, TurnService
from agenthost.web.direct_write import frame_closer, frame_writer, write_buffer
from agenthost.web.eager_send import send_eagerly

__all__ = [
    "CLOSE_SLOW_CONSUMER",
    "SUBPROTOCOL",
    "ClientFrame",
    "OpenWebSockets",
    "WebSocketOptions",
    "WebSocketRoutes",
    "WebSocketSession",
    "handshake_credentials",
    "parse_frame",
]

CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_SERVICE_RESTART = 1012
CLOSE_SLOW_CONSUMER = 4001
_CLOSE_ANSWER_WAIT_S = 10.0  # after our close frame, how long the client has to answer
CLOSE_UNAUTHORIZED = 4401
CLOSE_BAD_SESSION = 4004

# Errors that end the connection (after their error frame), with the close code each gets.
CLOSING_ERRORS: dict[type[AgentHostError], int] = {
    BinaryFrame: CLOSE_UNSUPPORTED_DATA,
    FrameRateExceeded: CLOSE_POLICY_VIOLATION,
    FrameTooLarge: CLOSE_MESSAGE_TOO_BIG,
}


class TurnFrame(msgspec.Struct, tag="turn", forbid_unknown_fields=True):
    message: Annotated[str, msgspec.Meta(min_length=1)]
    turn_id: str | None = None
    metadata: dict[str, Any] | None = None
    on_busy: Literal["reject", "enqueue", "interrupt"] = "enqueue"
    after: Annotated[int, msgspec.Meta(ge=0)] = 0
    on_disconnect: Literal["continue", "cancel"] = "continue"


class ResumeFrame(msgspec.Struct, tag="resume", forbid_unknown_fields=True):
    turn_id: str
    after: Annotated[int, msgspec.Meta(ge=0)] = 0


ClientFrame = TurnFrame | ResumeFrame


class ChunkFrame(msgspec.Struct, tag="chunk"):
    """Text of the turn, in order; `seq` numbers every event of the turn from 1."""

    turn_id: str
    seq: int
    text: str


class ToolFrame(msgspec.Struct, tag="tool"):
    """The agent called a tool: its call id, name, arguments and result."""

    turn_id: str
    seq: int
    call_id: str
    name: str
    arguments: Any
    result: Any


class InterruptFrame(msgspec.Struct, tag="interrupt"):
    """The agent stopped to ask the human `value`; the next turn's message answers it."""

    turn_id: str
    seq: int
    value: Any
    id: str | None = None


class ResetFrame(msgspec.Struct, tag="reset"):
    """The turn runs again after its process died: drop the text received for it so far."""

    turn_id: str
    seq: int
    reason: str


class DoneFrame(msgspec.Struct, tag="done"):
    """The committed turn: `response` is the whole answer."""

    turn_id: str
    seq: int
    session_id: str
    response: str


class ErrorFrame(msgspec.Struct, tag="error"):
    """A refused frame (the connection stays, unless a close follows) or a failed turn."""

    code: str
    message: str
    turn_id: str | None = None
    seq: int | None = None


ServerFrame = ChunkFrame | ToolFrame | InterruptFrame | ResetFrame | DoneFrame | ErrorFrame
"""What the server sends (built by hand on the hot path; these types document it)."""

WEBSOCKET_PROTOCOL = (
    "A WebSocket (`ws://` or `wss://`; `Authorization: Bearer <key>` on the handshake when "
    "the server asks for auth; a browser, which cannot set it, offers the subprotocols "
    "`agenthost` and `bearer.<key>` instead). Client frames are JSON text: `turn` runs a "
    "turn (give `turn_id` to make it resumable; with `after`, a turn sent again resumes after that "
    "event), `resume` reads a turn's events after `after` from any process. Server frames: "
    "`chunk`, `tool`, `interrupt`, `reset`, `done`, `error`, each with the turn's `seq`. "
    "Close codes: 1000 normal or idle, 1003 binary frame, 1008 frame rate exceeded, "
    "1009 frame too large, 1012 the "
    "process drains (reconnect elsewhere), 4001 too slow to read, 4004 invalid session id, "
    "4401 unauthorized. The frame schemas are under `x-websocket`."
)
_decode_frame = msgspec.json.Decoder(ClientFrame).decode


def parse_frame(data: str | bytes, limits: InputLimits, max_frame_bytes: int) -> ClientFrame:
    """A received frame as a typed client frame with valid ids, within the input limits.

    Raises only AgentHostError: BinaryFrame, FrameTooLarge, BadFrame (not JSON, wrong shape,
    unknown type), JSONTooDeep, BadRequest (a bad turn id), TurnIdRequired (`after` with no
    `turn_id`), MessageTooLong,
    MetadataTooLarge or MetadataTooDeep.
    """
    if not isinstance(data, str):
        raise BinaryFrame("binary frames are not accepted: send JSON as text frames")
    size = len(data) if data.isascii() else len(data.encode("utf-8", "surrogatepass"))
    if size > max_frame_bytes:
        raise FrameTooLarge(f"the frame is {size} bytes; the limit is {max_frame_bytes}")
    try:
        frame: ClientFrame = _decode_frame(data)
    except (msgspec.DecodeError, UnicodeEncodeError) as exc:
        raise BadFrame(str(exc)) from None
    except RecursionError:
        raise JSONTooDeep("the frame's JSON nests too deeply") from None
    if frame.turn_id is not None:
        check_turn_id(frame.turn_id)
    elif frame.after:
        raise TurnIdRequired("a turn frame with `after` resumes a turn: give its `turn_id`")
    if isinstance(frame, TurnFrame):
        limits.check_turn(frame.message, frame.metadata)
    return frame


_encode = msgspec.json.encode
_decode = msgspec.json.decode


async def _once(event: StreamEvent) -> AsyncIterator[StreamEvent]:
    yield event


@dataclass(frozen=True, slots=True)
class WebSocketOptions:
    """A connection's bounds, from the settings of the same names (`--ws-*`)."""

    send_buffer: int
    send_buffer_bytes: int
    idle_timeout: float
    max_frame_bytes: int
    max_frames_per_s: float
    slow_consumer_grace: float  # after the 4001: a client has this long to read to it

    @classmethod
    def from_settings(cls, settings: Settings) -> WebSocketOptions:
        return cls(
            send_buffer=settings.ws_send_buffer,
            send_buffer_bytes=settings.ws_send_buffer_bytes,
            idle_timeout=settings.ws_idle_timeout,
            max_frame_bytes=settings.ws_max_frame_bytes,
            max_frames_per_s=settings.ws_max_frames_per_s,
            slow_consumer_grace=settings.ws_slow_consumer_grace,
        )


class WebSocketSession:
    """One accepted connection: a receive loop, a bounded send buffer, its running turns.

    An idle connection holds no task, queue or timeout of its own (10,000 of them must fit in
    a few hundred MB): the sender task exists only while frames wait to go out, and one timer
    per connection checks for idleness.
    """

    __slots__ = (
        "asgi_send",
        "auth",
        "authorization",
        "buffered",
        "cancel_on_close",
        "close_now",
        "close_reason",
        "closing",
        "frame_rate",
        "idle_timeout",
        "idle_timer",
        "last_active",
        "last_frame",
        "limits",
        "max_frame_bytes",
        "outgoing",
        "principal",
        "queued_bytes",
        "send_buffer",
        "send_buffer_bytes",
        "sender",
        "service",
        "serving",
        "session_id",
        "slow_consumer_grace",
        "tasks",
        "write_now",
        "ws",
    )

    def __init__(
        self,
        service: TurnService,
        ws: WebSocket,
        asgi_send: Send,
        session_id: str,
        principal: Principal,
        limits: InputLimits,
        options: WebSocketOptions,
        auth: Authenticator,
        authorization: str | None,
    ) -> None:
        self.service = service
        self.ws = ws
        # The handshake's credential, checked again (through the authenticator's cache) on
        # every turn and resume frame: a key revoked or a token expired since the handshake
        # closes the connection with 4401.
        self.auth = auth
        self.authorization = authorization
        # Frames go straight to the ASGI server: Starlette's `send_text` adds two coroutine
        # frames per frame and checks a state this class already keeps (`closing`).
        self.asgi_send = asgi_send
        # Where the server offers it, a frame is written straight to the socket when nothing
        # stands in the way (agenthost.web.direct_write); else through `asgi_send`.
        self.write_now = frame_writer(ws.scope)
        # What the socket holds, and a close that passes back-pressure, where offered.
        self.buffered = write_buffer(ws.scope)
        self.close_now = frame_closer(ws.scope)
        self.session_id = session_id
        self.principal = principal
        self.send_buffer = options.send_buffer
        self.send_buffer_bytes = options.send_buffer_bytes
        self.slow_consumer_grace = options.slow_consumer_grace
        self.queued_bytes = 0
        self.outgoing: collections.deque[bytes] | None = None  # made on the first frame
        self.sender: asyncio.Task[None] | None = None
        self.serving: asyncio.Task[Any] | None = None
        self.idle_timeout = options.idle_timeout
        self.idle_timer: asyncio.TimerHandle | None = None
        self.last_active = 0.0
        self.tasks: set[asyncio.Task[None]] = set()
        self.cancel_on_close: list[StreamedTurn] = []
        self.closing: int | None = None
        self.close_reason = ""
        self.last_frame: bytes | None = None
        self.limits = limits
        self.max_frame_bytes = options.max_frame_bytes
        self.frame_rate = FrameRateLimiter(options.max_frames_per_s)

    # -- sending ----------------------------------------------------------------------------

    def send(self, frame: dict[str, Any]) -> None:
        self.send_encoded(_encode(frame))

    def send_encoded(self, frame: bytes) -> None:
        """Send a frame already encoded as JSON: at once when nothing is waiting to go out
        (the socket takes it; no task wakes), else after what is queued."""
        if self.closing is not None:
            return
        outgoing = self.outgoing
        if self.sender is None and not outgoing:
            write_now = self.write_now
            if write_now is not None and write_now(frame):
                return
            try:
                rest = send_eagerly(
                    self.asgi_send({"type": "websocket.send", "text": frame.decode()})
                )
            except Exception:
                self.outgoing = None  # the connection is gone; its receive loop ends too
                return
            if rest is not None:  # the socket's buffer is full: finish in a task
                self.sender = asyncio.ensure_future(self._send_queued(rest))
            return
        if outgoing is None:
            outgoing = self.outgoing = collections.deque()
        queued = self.queued_bytes + len(frame)
        if self.buffered is not None:
            queued += self.buffered()
        if queued > self.send_buffer_bytes or len(outgoing) >= self.send_buffer:
            self.close_slow_consumer()
            return
        self.queued_bytes += len(frame)
        outgoing.append(frame)

    def close_slow_consumer(self) -> None:
        """The client does not read what it is sent: drop its queue and close with 4001 at
        once. Where the server offers it, the close frame passes the back-pressure a client
        that never reads keeps on, and the connection is aborted if it is still open after
        a grace time; else the connection is given up after the same time."""
        self.close(CLOSE_SLOW_CONSUMER, "slow_consumer")
        close_now = self.close_now
        if close_now is None or not close_now(
            CLOSE_SLOW_CONSUMER, "slow_consumer", self.slow_consumer_grace
        ):
            if self.idle_timer is not None:
                self.idle_timer.cancel()
            self._arm_idle_timer(self.slow_consumer_grace)

    def close(self, code: int, reason: str = "", last_frame: bytes | None = None) -> None:
        """Close with `code` once the sender gets to it, dropping what is queued; the sender
        sends `last_frame` (an error frame saying why) first."""
        if self.closing is None:
            self.closing = code
            self.close_reason = reason
            self.last_frame = last_frame
            self.outgoing = None  # the close goes out next, whatever the buffer held
            self.queued_bytes = 0
            if self.sender is None:
                self.sender = asyncio.ensure_future(self._send_queued(None))

    async def _send_queued(self, rest: Awaitable[None] | None) -> None:
        """Finish a send that had to wait, send what queued up behind it, then (once
        closing) the last frame and the close. The task ends when the queue is empty: the
        next frame is sent at once again."""
        try:
            if rest is not None:
                await rest
            while self.outgoing:
                frame = self.outgoing.popleft()
                self.queued_bytes -= len(frame)
                await self.asgi_send({"type": "websocket.send", "text": frame.decode()})
            self.outgoing = None
            if self.closing is not None:
                with contextlib.suppress(Exception):
                    if self.last_frame is not None:
                        await self.ws.send_text(self.last_frame.decode())
                    await self.ws.close(self.closing, self.close_reason)
        except Exception:
            self.outgoing = None  # the connection is gone; its receive loop ends too
        finally:
            self.sender = None

    # -- idleness ---------------------------------------------------------------------------

    def _gave_up_on_close(self) -> bool:
        """Whether a cancellation of the receive loop is ours (the client never answered our
        close); if so it is absorbed."""
        task = self.serving
        if self.closing is None or task is None:
            return False
        task.uncancel()
        return True

    def _arm_idle_timer(self, delay: float) -> None:
        self.idle_timer = asyncio.get_running_loop().call_later(delay, self._idle_check)

    def _idle_check(self) -> None:
        """One timer per connection: close one that stayed silent with no turn running; stop
        waiting for a client that never answered our close."""
        self.idle_timer = None
        if self.closing is not None:
            if self.serving is not None:
                if self.sender is not None:
                    self.sender.cancel()  # stuck behind a client that never reads
                self.serving.cancel()  # our close went out long ago; no answer came
            return
        quiet = time.monotonic() - self.last_active
        if quiet >= self.idle_timeout and not self.tasks:
            self.close(1000, "idle")
            self._arm_idle_timer(_CLOSE_ANSWER_WAIT_S)
        else:
            self._arm_idle_timer(max(self.idle_timeout - quiet, 1.0))

    def count_refusal(self, exc: AgentHostError) -> None:
        """Count a refused frame or turn in agenthost_rejections_total, as HTTP answers are."""
        self.service.metrics.error_answered(exc.status, exc.code)

    def refuse(self, exc: AgentHostError) -> None:
        """Answer a frame that failed: an error frame, and for a transport-rule breach
        (CLOSING_ERRORS) the close that follows it."""
        error = {"type": "error", "code": exc.code, "message": exc.message}
        self.count_refusal(exc)
        close_code = CLOSING_ERRORS.get(type(exc))
        if close_code is None:
            self.send(error)
        else:
            self.close(close_code, exc.code, _encode(error))

    # -- turns ------------------------------------------------------------------------------

    async def _forward(self, turn_id: str, events: AsyncIterator[StreamEvent]) -> None:
        # A chunk's frame is spliced from bytes (its data is `{"text": ...}`), not decoded and
        # encoded again: this runs for every chunk of every stream, pushed by the publisher
        # where the broker can (no task wakes per chunk).
        chunk_head = b'{"type":"chunk","turn_id":' + _encode(turn_id) + b',"seq":'

        def emit(event: StreamEvent) -> None:
            if event.kind == "chunk":
                self.send_encoded(b"%s%d,%s" % (chunk_head, event.seq, event.data[1:]))
                return
            payload = _decode(event.data)
            # tool, interrupt, reset, done, error: the kind is the frame's type.
            self.send({"type": event.kind, "turn_id": turn_id, "seq": event.seq, **payload})

        await forward(events, emit)

    def _start(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._turn_ended)

    def _turn_ended(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if self.service.draining and not self.tasks:
            self.close(CLOSE_SERVICE_RESTART)

    async def _still_allowed(self) -> Principal | None:
        """The caller, if its credential is still valid; else an `unauthorized` error frame,
        the close with 4401, and None."""
        try:
            self.principal = await self.auth.authenticate(self.authorization)
        except AgentHostError as exc:
            self.count_refusal(exc)
            error = {"type": "error", "code": exc.code, "message": exc.message}
            self.close(CLOSE_UNAUTHORIZED, exc.code, _encode(error))
            return None
        return self.principal

    def _turn(self, frame: TurnFrame) -> None:
        if self.service.draining:
            # Refused before it starts; the client reconnects elsewhere and sends it again.
            self.send({"type": "error", "code": "draining", "turn_id": frame.turn_id,
                       "message": "this process is draining; reconnect"})  # fmt: skip
            self.close(CLOSE_SERVICE_RESTART)
            return

        # The turn runs on even if this connection goes (unless on_disconnect=cancel): it
        # commits and can be resumed. A turn id seen before rejoins that turn (resume).
        async def turn() -> None:
            principal = await self._still_allowed()
            if principal is None:
                return
            service = self.service
            turn_id = frame.turn_id
            try:
                turn_id = await service.enter(principal, self.session_id, turn_id)
                try:
                    streamed = await service.start_streamed(
                        self.session_id,
                        turn_id,
                        frame.message,
                        metadata=frame.metadata,
                        on_busy=frame.on_busy,
                        after=frame.after,
                    )
                except BaseException:
                    service.leave(principal, self.session_id, turn_id)
                    raise
            except StreamEnded as ended:
                # Sent again after its final event: that event again, nothing to wait for.
                await self._forward(turn_id or "", _once(ended.final))
                return
            except AgentHostError as exc:
                self.count_refusal(exc)
                self.send({"type": "error", "code": exc.code, "message": exc.message,
                           "turn_id": turn_id})  # fmt: skip
                return
            service.leave_when_done(principal, streamed)
            if frame.on_disconnect == "cancel":
                self.cancel_on_close.append(streamed)
            await self._forward(streamed.turn_id, streamed.events)

        self._start(turn())

    def _resume(self, frame: ResumeFrame) -> None:
        turn_id = frame.turn_id

        async def resume() -> None:
            if await self._still_allowed() is None:
                return
            try:
                events = await self.service.events(self.session_id, turn_id, frame.after)
            except StreamEnded as ended:
                events = _once(ended.final)  # nothing after it: the final event again
            except AgentHostError as exc:
                # e.g. a resume of a turn never started: say so rather than stay silent.
                self.send({"type": "error", "code": exc.code, "message": exc.message,
                           "turn_id": turn_id})  # fmt: skip
                return
            await self._forward(turn_id, events)

        self._start(resume())

    # -- the connection ---------------------------------------------------------------------

    async def serve(self) -> None:
        self.serving = asyncio.current_task()
        self.last_active = time.monotonic()
        self._arm_idle_timer(self.idle_timeout)
        try:
            while self.closing is None:
                try:
                    message = await self.ws.receive()
                except (WebSocketDisconnect, RuntimeError):
                    break
                except asyncio.CancelledError:
                    if not self._gave_up_on_close():
                        raise
                    break
                if message["type"] == "websocket.disconnect":
                    break
                self.last_active = time.monotonic()
                try:
                    self.frame_rate.take()
                    text = message.get("text")
                    data = message.get("bytes", b"") if text is None else text
                    frame = parse_frame(data, self.limits, self.max_frame_bytes)
                    if isinstance(frame, TurnFrame):
                        self._turn(frame)
                    else:
                        self._resume(frame)
                except AgentHostError as exc:
                    self.refuse(exc)
        finally:
            self.serving = None
            if self.idle_timer is not None:
                self.idle_timer.cancel()
                self.idle_timer = None
            for streamed in self.cancel_on_close:
                streamed.cancel()
            for task in list(self.tasks):
                task.cancel()
            self.close(1000)
            sender = self.sender
            if sender is not None:
                try:
                    await sender
                except asyncio.CancelledError:
                    if not sender.cancelled():
                        raise  # this task's own cancellation, not the sender's
                except Exception:
                    pass  # the connection is gone


class OpenWebSockets:
    """This process's open connections, counted in the metrics; at drain, those with no turn
    running are closed with 1012 (the others close when their turns end)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.connections: set[WebSocketSession] = set()

    def add(self, connection: WebSocketSession) -> None:
        self.connections.add(connection)
        self.metrics.open_websockets += 1

    def discard(self, connection: WebSocketSession) -> None:
        if connection in self.connections:
            self.connections.discard(connection)
            self.metrics.open_websockets -= 1

    def close_idle(self) -> None:
        for connection in list(self.connections):
            if not connection.tasks:
                connection.close(CLOSE_SERVICE_RESTART)


SUBPROTOCOL = "agenthost"
"""The subprotocol a browser offers beside `bearer.<key or token>`: a browser cannot set
`Authorization` on a handshake, so it may carry the credential there instead."""


def handshake_credentials(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """The handshake's `Authorization` (or, from a browser, `Bearer <x>` from an offered
    `bearer.<x>` subprotocol, when `agenthost` is offered too) and the subprotocol to
    accept with (`agenthost` when offered: the credential is never echoed)."""
    authorization: str | None = None
    offered: list[str] = []
    for name, value in headers:
        if name == b"authorization":
            authorization = value.decode("latin-1")
        elif name == b"sec-websocket-protocol":
            offered += [p.strip() for p in value.decode("latin-1").split(",")]
    if SUBPROTOCOL not in offered:
        return authorization, None
    if authorization is None:
        bearer = next((p.removeprefix("bearer.") for p in offered if p.startswith("bearer.")), "")
        authorization = f"Bearer {bearer}" if bearer else None
    return authorization, SUBPROTOCOL


class WebSocketRoutes:
    """`WS /v1/sessions/{session_id}/ws` as an ASGI endpoint."""

    def __init__(
        self,
        service: TurnService,
        auth: Authenticator,
        limits: InputLimits,
        options: WebSocketOptions,
        open_websockets: OpenWebSockets,
    ) -> None:
        self.service = service
        self.auth = auth
        self.limits = limits
        self.options = options
        self.open_websockets = open_websockets

    async def websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Validate, accept and serve one connection."""
        ws = WebSocket(scope, receive, send)
        try:
            session_id = check_session_id(ws.path_params["session_id"])
        except AgentHostError:
            await ws.close(CLOSE_BAD_SESSION, "invalid_session_id")
            return
        authorization, subprotocol = handshake_credentials(scope["headers"])
        # Nothing reads the handshake's headers again: do not hold them while the socket lives.
        scope["headers"] = []
        if self.service.draining:
            # Accepted only to close with 1012 (a refused handshake would read as a 403).
            await ws.accept(subprotocol)
            await ws.close(CLOSE_SERVICE_RESTART, "draining")
            return
        try:
            principal = await self.auth.authenticate(authorization)
        except AgentHostError as exc:
            # Accepted only to say why: a refused handshake would tell the client nothing.
            await ws.accept(subprotocol)
            await ws.send_text(
                _encode({"type": "error", "code": exc.code, "message": exc.message}).decode()
            )
            await ws.close(CLOSE_UNAUTHORIZED, exc.code)
            return
        await ws.accept(subprotocol)
        session_id = scoped_session_id(principal.tenant, session_id)
        connection = WebSocketSession(
            self.service,
            ws,
            send,
            session_id,
            principal,
            self.limits,
            self.options,
            self.auth,
            authorization,
        )
        self.open_websockets.add(connection)
        try:
            await connection.serve()
        finally:
            self.open_websockets.discard(connection)
