"""WebSocket fuzzing: any frame parses to a typed client frame or a clear error (hypothesis),
and against a running server garbage, wrong shapes, out-of-order, huge, binary and flooding
clients each get their documented error frame or close code while a well-behaved connection
on the same process completes its turn."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from agenthost.core.errors import AgentHostError, BinaryFrame, FrameTooLarge
from agenthost.core.input_limits import InputLimits
from agenthost.core.settings import Settings
from agenthost.runtime.assembly import build_app
from agenthost.web.websocket import ResumeFrame, TurnFrame, parse_frame
from tests.fixtures.agenthost import AgentHostProcess, http_status

LIMITS = InputLimits(max_message_chars=200, max_metadata_bytes=512, max_metadata_depth=4)
MAX_FRAME = 4096
# Every error a frame can get; each one's meaning is in websocket.py's close-code table.
FRAME_ERRORS = {
    "bad_frame",
    "bad_request",
    "binary_frame",
    "frame_too_large",
    "json_too_deep",
    "message_too_long",
    "metadata_too_large",
    "metadata_too_deep",
    "turn_id_required",
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
ids = st.text(max_size=140) | st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True)
frame_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["turn", "resume", "dance", ""]) | json_values},
    optional={
        "message": st.text(max_size=250) | json_values,
        "turn_id": ids | json_values,
        "metadata": json_values,
        "on_busy": st.sampled_from(["reject", "enqueue", "interrupt", "x"]),
        "on_disconnect": st.sampled_from(["continue", "cancel", "x"]),
        "after": st.integers() | json_values,
        "extra": json_values,
    },
)


def parse(data: str | bytes) -> TurnFrame | ResumeFrame | AgentHostError:
    """parse_frame's result, or the AgentHostError it raised (any other exception fails)."""
    try:
        return parse_frame(data, LIMITS, MAX_FRAME)
    except AgentHostError as exc:
        assert exc.code in FRAME_ERRORS, exc.code
        assert exc.message
        return exc


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
def test_any_text_is_a_frame_or_a_clear_error(text: str) -> None:
    result = parse(text)
    assert isinstance(result, TurnFrame | ResumeFrame | AgentHostError)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=300))
def test_any_binary_frame_is_refused(data: bytes) -> None:
    assert isinstance(parse(data), BinaryFrame)


@settings(max_examples=200, deadline=None)
@given(value=frame_like | json_values)
def test_any_json_is_a_frame_within_the_limits_or_a_clear_error(value: Any) -> None:
    result = parse(json.dumps(value))
    if isinstance(result, TurnFrame):
        assert 0 < len(result.message) <= LIMITS.max_message_chars
        assert result.turn_id is None or len(result.turn_id) <= 128
    elif isinstance(result, ResumeFrame):
        assert result.after >= 0 and len(result.turn_id) <= 128


@settings(max_examples=100, deadline=None)
@given(
    message=st.text(min_size=1, max_size=200),
    turn_id=st.none() | st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True),
    metadata=st.none() | st.dictionaries(st.text(max_size=5), st.integers(), max_size=5),
    on_busy=st.sampled_from(["reject", "enqueue", "interrupt"]),
)
def test_valid_turn_frames_parse_to_what_was_sent(
    message: str, turn_id: str | None, metadata: dict[str, int] | None, on_busy: str
) -> None:
    sent = {"type": "turn", "message": message, "turn_id": turn_id, "metadata": metadata,
            "on_busy": on_busy}  # fmt: skip
    frame = parse_frame(json.dumps(sent), LIMITS, MAX_FRAME)
    assert isinstance(frame, TurnFrame)
    assert (frame.message, frame.turn_id, frame.metadata, frame.on_busy) == (
        message,
        turn_id,
        metadata,
        on_busy,
    )


@settings(max_examples=50, deadline=None)
@given(size=st.integers(MAX_FRAME + 1, 3 * MAX_FRAME), char=st.sampled_from("a\u00e9\u20ac"))
def test_frames_over_the_byte_limit_are_refused(size: int, char: str) -> None:
    # Counted in UTF-8 bytes, not characters.
    text = char * (size // len(char.encode()) + 1)
    assert isinstance(parse(text), FrameTooLarge)


def test_in_app_frame_size_check_closes_with_1009(tmp_path: Path) -> None:
    # Under uvicorn the protocol closes first; any other ASGI server gets the same code.
    app = build_app(Settings(llm="sim://", store="memory://", ws_max_frame_bytes=1024))
    with TestClient(app) as client, client.websocket_connect("/v1/sessions/big/ws") as ws:
        ws.send_text("x" * 2000)
        assert ws.receive_json()["code"] == "frame_too_large"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1009 and closed.value.reason == "frame_too_large"


# -- against a running server -------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentHostProcess]:
    logs = Path(tmp_path_factory.mktemp("wsfuzz"))
    proc = AgentHostProcess(
        {
            "store": "memory://",
            "llm": "sim://?tokens_per_s=40&words=40",
            "chunk_coalesce_ms": 0,
            "ws_max_frame_bytes": MAX_FRAME,
            "ws_max_frames_per_s": 30,
            "max_message_chars": LIMITS.max_message_chars,
            "max_metadata_bytes": LIMITS.max_metadata_bytes,
            "max_metadata_depth": LIMITS.max_metadata_depth,
        },
        logs / "agenthost.log",
    )
    proc.start()
    yield proc
    proc.stop()


def ws_url(server: AgentHostProcess, session_id: str) -> str:
    return f"{server.url.replace('http', 'ws')}/v1/sessions/{session_id}/ws"


async def next_frame(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.receive(), 10)
    assert message.type == aiohttp.WSMsgType.TEXT, (message.type, message.data, message.extra)
    frame: dict[str, Any] = json.loads(message.data)
    return frame


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, list[str]]:
    """Read until the server closes: its close code and the error codes it sent first."""
    codes: list[str] = []
    while True:
        message = await asyncio.wait_for(ws.receive(), 10)
        if message.type == aiohttp.WSMsgType.TEXT:
            codes.append(json.loads(message.data)["code"])
        elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            return ws.close_code, codes
        else:
            raise AssertionError(f"unexpected {message.type}: {message.data!r}")


async def complete_turn(ws: aiohttp.ClientWebSocketResponse, message: str) -> dict[str, Any]:
    """Send a turn and read it to its end; the frames are numbered without a gap."""
    await ws.send_json({"type": "turn", "message": message})
    frames = [await next_frame(ws)]
    while frames[-1]["type"] == "chunk":
        frames.append(await next_frame(ws))
    assert frames[-1]["type"] == "done", frames[-1]
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    text = "".join(f["text"] for f in frames if f["type"] == "chunk")
    assert text == frames[-1]["response"] and message in text
    return frames[-1]


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"k": value}
    return value


BAD_BUT_KEPT = [
    ("\x00\x7f garbage", "bad_frame"),
    ('{"type": "turn", "message": ', "bad_frame"),
    ("[1, 2, 3]", "bad_frame"),
    ('{"type": 7}', "bad_frame"),
    ('{"type": "dance"}', "bad_frame"),
    ('{"type": "turn"}', "bad_frame"),
    ('{"type": "turn", "message": ""}', "bad_frame"),
    ('{"type": "turn", "message": "x", "surprise": 1}', "bad_frame"),
    ('{"type": "resume", "turn_id": "t", "after": -1}', "bad_frame"),
    ('{"type": "turn", "message": "x", "turn_id": "no spaces"}', "bad_request"),
    (json.dumps({"type": "turn", "message": "x" * 201}), "message_too_long"),
    (json.dumps({"type": "turn", "message": "x", "metadata": nested(5)}), "metadata_too_deep"),
    (json.dumps({"type": "turn", "message": "x", "metadata": {"k": "v" * 600}}),
     "metadata_too_large"),
    ('{"type": "turn", "message": "x", "metadata": {"k": ' + "[" * 1500 + "]" * 1500 + "}}",
     "json_too_deep"),
    # Out of order: resuming a turn that never started.
    ('{"type": "resume", "turn_id": "never-started", "after": 0}', "turn_not_found"),
]  # fmt: skip


async def bad_frames_then_a_turn(server: AgentHostProcess) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(server, "kept")) as ws:
        for text, code in BAD_BUT_KEPT:
            await ws.send_str(text)
            frame = await next_frame(ws)
            assert (frame["type"], frame.get("code")) == ("error", code), (text[:80], frame)
        # Still usable after all of that.
        await complete_turn(ws, "after the garbage")


async def binary_frame(server: AgentHostProcess) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(server, "bin")) as ws:
        await ws.send_bytes(b'{"type": "turn", "message": "as bytes"}')
        assert await closed_with(ws) == (1003, ["binary_frame"])


async def huge_frame(server: AgentHostProcess) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(server, "huge")) as ws:
        await ws.send_str(json.dumps({"type": "turn", "message": "x" * (MAX_FRAME + 1)}))
        # uvicorn's WebSocket max size is the same limit: it closes before the app sees it.
        assert await closed_with(ws) == (1009, [])


async def flood(server: AgentHostProcess) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(server, "flood")) as ws:
        for _ in range(200):  # over 6 s of the allowed rate, sent at once
            await ws.send_str("{}")
        code, errors = await closed_with(ws)
        assert code == 1008
        assert errors[-1] == "frame_rate_exceeded"
        assert set(errors[:-1]) <= {"bad_frame"}


async def a_turn_while_one_runs(server: AgentHostProcess) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(server, "busy")) as ws:
        await ws.send_json({"type": "turn", "message": "the first", "turn_id": "busy-1"})
        first = await next_frame(ws)
        assert first["type"] == "chunk" and first["turn_id"] == "busy-1"
        await ws.send_json(
            {"type": "turn", "message": "the second", "turn_id": "busy-2", "on_busy": "reject"}
        )
        frames = [await next_frame(ws)]
        while not any(f["type"] == "done" for f in frames):
            frames.append(await next_frame(ws))
        rejected = [f for f in frames if f.get("turn_id") == "busy-2"]
        assert [(f["type"], f["code"]) for f in rejected] == [("error", "session_busy")]
        assert frames[-1]["turn_id"] == "busy-1"


async def test_bad_connections_are_answered_and_a_good_one_is_unaffected(
    server: AgentHostProcess,
) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(server, "good")) as good:
        well_behaved = asyncio.ensure_future(complete_turn(good, "the well behaved one"))
        await asyncio.gather(
            bad_frames_then_a_turn(server),
            binary_frame(server),
            huge_frame(server),
            flood(server),
            a_turn_while_one_runs(server),
        )
        done = await asyncio.wait_for(well_behaved, 10)
        assert done["session_id"] == "good"
        # The good connection is still open and takes another turn.
        await complete_turn(good, "and another")
    assert http_status(server.url + "/healthz") == 200
    assert server.proc is not None and server.proc.poll() is None
