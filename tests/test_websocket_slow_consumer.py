"""A WebSocket client that stops reading is closed with 4001 (`slow_consumer`) once its
bounded send buffer is full: the server drops the frames it could not send instead of
holding them (its memory does not grow with a stalled reader), the turn still commits, and
other connections are served meanwhile."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.fixtures.agenthost import AgentHostProcess, http_status

# 80,000 fast tokens, one frame each (no coalescing), under the longest turn id allowed:
# about 17 MB of frames for a 0.5 MB answer, four times what Linux lets a loopback
# socket's send buffer absorb (net.ipv4.tcp_wmem's maximum, 4 MB): the server must give up.
FLOOD_LLM = "sim://?tokens_per_s=50000&words=80000"
FLOOD_TURN_ID = "slow-" + "t" * 123  # 128 characters, repeated in every chunk frame
SEND_BUFFER = 8  # frames queued per connection before the client counts as too slow


def small_window_socket(port: int) -> socket.socket:
    """A connected socket with a tiny receive buffer: once the client stops reading, the
    client side absorbs next to nothing."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


def turn_record(server: AgentHostProcess, session_id: str, turn_id: str) -> dict[str, Any]:
    url = f"{server.url}/v1/sessions/{session_id}/turns/{turn_id}"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            record: dict[str, Any] = msgspec.json.decode(resp.read())
            return record
    except OSError:
        return {}


async def wait_for_status(
    server: AgentHostProcess, session_id: str, turn_id: str, status: str, timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (record := await asyncio.to_thread(turn_record, server, session_id, turn_id)).get(
        "status"
    ) != status:
        if time.monotonic() > deadline:
            raise AssertionError(f"turn {turn_id} not {status} after {timeout} s: {record}")
        await asyncio.sleep(0.05)
    return record


async def one_turn(ws: ClientConnection, message: str) -> dict[str, Any]:
    """Send a turn and read to its last frame (done or error)."""
    await ws.send(msgspec.json.encode({"type": "turn", "message": message}).decode())
    while True:
        frame: dict[str, Any] = msgspec.json.decode(await ws.recv())
        if frame["type"] != "chunk":
            return frame


async def test_a_client_that_stops_reading_is_closed_with_4001_and_others_are_served(
    agenthost_factory: Callable[..., AgentHostProcess],
) -> None:
    server = agenthost_factory(llm=FLOOD_LLM, chunk_coalesce_ms=0, ws_send_buffer=SEND_BUFFER)
    ws_url = server.url.replace("http", "ws")
    async with connect(f"{ws_url}/v1/sessions/bystander/ws", ping_interval=None) as other:
        slow = await connect(
            f"{ws_url}/v1/sessions/slow/ws",
            sock=small_window_socket(server.port),
            ping_interval=None,
            max_queue=4,  # past 4 frames the client library stops reading the socket too
            # Uncompressed, so the frames fill the socket buffers as sent. (With
            # permessage-deflate the repeated frames shrink ~20x and the close is not seen.)
            compression=None,
        )
        flood = {"type": "turn", "message": "flood", "turn_id": FLOOD_TURN_ID}
        await slow.send(msgspec.json.encode(flood).decode())
        # The turn runs on without its reader and commits; by then every one of its frames
        # was either buffered for the client or given up on.
        record = await wait_for_status(server, "slow", FLOOD_TURN_ID, "completed", 30)
        answer = record["response"]

        # Another connection is served normally while the stalled one is still open.
        done = await one_turn(other, "still there?")
        assert done["type"] == "done" and "still there?" in done["response"]

        # Now read what got through: chunks in order, then the close the server decided on.
        chunks: list[dict[str, Any]] = []
        close_code = None
        async with asyncio.timeout(20):
            try:
                while True:
                    chunks.append(msgspec.json.decode(await slow.recv()))
            except ConnectionClosed as closed:
                close_code = closed.rcvd.code if closed.rcvd is not None else None
        assert close_code == 4001
        assert slow.close_code == 4001
        assert chunks and all(c["type"] == "chunk" for c in chunks)  # no done frame
        assert [c["seq"] for c in chunks] == list(range(1, len(chunks) + 1))
        received = "".join(c["text"] for c in chunks)
        assert answer.startswith(received)
        # What the server still held for this client when it gave up was flushed before the
        # close frame; the rest was dropped rather than kept in the server's memory. (How
        # much got through depends on how many tokens a loaded loop packs into one frame,
        # so the check is that some was dropped, not how much.)
        assert len(received) < len(answer), (len(received), len(answer))

    assert http_status(server.url + "/healthz") == 200
