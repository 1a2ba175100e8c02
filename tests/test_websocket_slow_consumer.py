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
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.fixtures.agenthost import AgentHostProcess, async_wait_until, http_status

# One after another on one worker: each floods its server with megabytes of frames, and a
# loop loaded by the other packs more tokens into each frame, until the frames fit in the
# kernel's socket buffers and no bound is ever reached.
pytestmark = pytest.mark.xdist_group("slow_consumer")

# 50,000 fast tokens, one frame each (no coalescing, and the simulated model yields the loop
# before every token, however late it runs), under the longest turn id allowed: about
# 10.6 MB of frames for a 0.3 MB answer, two and a half times what Linux lets a loopback
# socket's send buffer absorb (net.ipv4.tcp_wmem's maximum, 4 MB): the server must give up.
FLOOD_LLM = "sim://?tokens_per_s=50000&words=50000"
FLOOD_TURN_ID = "slow-" + "t" * 123  # 128 characters, repeated in every chunk frame
SEND_BUFFER = 8  # frames queued per connection before the client counts as too slow


def small_window_socket(port: int, window: int = 4096) -> socket.socket:
    """A connected socket with a tiny receive buffer: once the client stops reading, the
    client side absorbs next to nothing."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, window)
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


def server_rss_mb(server: AgentHostProcess) -> float:
    for line in Path(f"/proc/{server.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def open_websockets(server: AgentHostProcess) -> int:
    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("agenthost_active_connections "):
                return int(line.split()[1])
    raise AssertionError("no agenthost_active_connections")


NEVER_READERS = 3
TURNS_EACH = 2
# About 126 KB an answer, a frame a token: with a 120-character turn id in every frame, 4 MB
# of frames a turn, 12 MB a client, past what the kernel's socket buffers absorb (4 MB).
BIG_LLM = "sim://?tokens_per_s=50000&words=25000"
BIG_TURN = "big-" + "b" * 116
# A loaded loop packs several tokens into a frame (measured: about 6,300 frames, 1.3 MB a
# turn): the client that reads at the end runs six turns, well past the 4 MB.
READER_TURNS = 6
BUFFER_BYTES = 256 * 1024
GRACE_S = 3.0  # after the 4001, until the abort (30 s by default), for clients that never read
# The server's kernel send buffer per connection: the frames past it wait in the server, where
# the byte bound sees them, however many tokens a loaded loop packs into a frame. (Autotuned,
# the kernel takes up to 4 MB, which a loaded loop's frames may never fill.)
SOCKET_SEND_BUFFER = 64 * 1024
RSS_BOUND_MB = 40.0  # measured 23 MB (turns, broker); the 28 MB of frames held would pass it


def lean_server(
    agenthost_factory: Callable[..., AgentHostProcess], **settings: Any
) -> AgentHostProcess:
    """A server on agenthost's lean protocols, whose fast path writes frames straight to the
    socket until it pushes back, where the byte bound is the one that bites."""
    server = agenthost_factory(
        llm=BIG_LLM,
        chunk_coalesce_ms=0,
        ws_send_buffer=1_000_000,
        ws_send_buffer_bytes=BUFFER_BYTES,
        ws_max_frames_per_s=1000,
        stream_ttl=1,  # the broker lets the turns' events go soon after: what stays is ours
        log_level="info",
        **settings,
    )
    assert "serving on agenthost's lean protocols" in server.log()
    return server


async def never_reader(
    server: AgentHostProcess, i: int, window: int, turns: int = TURNS_EACH
) -> ClientConnection:
    """A client on a tiny receive window that sends `turns` big turns and does not read."""
    ws = await connect(
        f"{server.url.replace('http', 'ws')}/v1/sessions/never-reads-{i}/ws",
        sock=small_window_socket(server.port, window),
        ping_interval=None,
        max_queue=4,
        compression=None,
    )
    for t in range(turns):
        frame = {"type": "turn", "message": f"big {t}", "turn_id": f"{BIG_TURN}{t}"}
        await ws.send(msgspec.json.encode(frame).decode())
    return ws


async def until_none_open(server: AgentHostProcess, timeout: float = 120) -> None:
    await async_wait_until(
        lambda: open_websockets(server) == 0, timeout, "never-reading clients to be closed"
    )


async def test_a_client_that_reads_only_after_its_turns_finds_its_frames_then_4001(
    agenthost_factory: Callable[..., AgentHostProcess],
) -> None:
    """A client that does not read while its turns run: by the time they have committed
    (their frames far past its byte bound), the server has given up on it with 4001. What
    was written before the close (frames in order), then the close frame, is there for it
    to read from then on (until the abort, 30 s after the close by default)."""
    server = lean_server(agenthost_factory)
    reader = await never_reader(server, NEVER_READERS, 4096, READER_TURNS)
    last = f"{BIG_TURN}{READER_TURNS - 1}"
    await wait_for_status(server, f"never-reads-{NEVER_READERS}", last, "completed", 60)
    seqs: dict[str, list[int]] = {}
    async with asyncio.timeout(25):
        try:
            while True:
                frame = msgspec.json.decode(await reader.recv())
                assert frame["type"] in ("chunk", "done"), frame
                seqs.setdefault(frame["turn_id"], []).append(frame["seq"])
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 4001, closed
            assert closed.rcvd.reason == "slow_consumer"
    assert seqs and all(got == list(range(1, len(got) + 1)) for got in seqs.values())
    await until_none_open(server)


async def test_never_reading_clients_are_closed_with_4001_let_go_and_the_server_does_not_grow(
    agenthost_factory: Callable[..., AgentHostProcess],
) -> None:
    """On agenthost's lean protocols: the byte bound (queued frames and the transport's
    buffer) closes never-reading clients with 4001, the server's RSS stays bounded, and
    their sockets are let go `--ws-slow-consumer-grace` later though they never read; with
    `--socket-send-buffer` the kernel holds no more than that for each."""
    server = lean_server(
        agenthost_factory,
        ws_slow_consumer_grace=GRACE_S,
        socket_send_buffer=SOCKET_SEND_BUFFER,
    )
    ws_url = server.url.replace("http", "ws")
    async with connect(f"{ws_url}/v1/sessions/warm-up/ws", ping_interval=None) as warm:
        assert (await one_turn(warm, "warm up"))["type"] == "done"
    before = server_rss_mb(server)

    clients = [await never_reader(server, i, 4096) for i in range(NEVER_READERS)]
    # Closed by the byte bound and aborted after the grace, well before the WebSocket
    # heartbeat would give up on them (40 s).
    await until_none_open(server, GRACE_S + 20)
    grown = server_rss_mb(server) - before
    assert grown < RSS_BOUND_MB, f"the server grew {grown:.1f} MB holding never-read frames"
    # They never read, so they never see the close: the server lets go of their sockets
    # within a bounded time all the same.
    ports = {ws.transport.get_extra_info("sockname")[1] for ws in clients}
    deadline = time.monotonic() + GRACE_S + 15  # the grace time, and slack for a busy machine
    while held := [
        c
        for c in psutil.Process(server.pid).net_connections()
        if c.raddr and c.raddr.port in ports and c.status == psutil.CONN_ESTABLISHED
    ]:
        assert time.monotonic() < deadline, f"{len(held)} connections still held"
        await asyncio.sleep(0.2)
    # Every turn still commits (they run on without their reader).
    for i in range(NEVER_READERS):
        last = f"{BIG_TURN}{TURNS_EACH - 1}"
        await wait_for_status(server, f"never-reads-{i}", last, "completed", 60)
    grown = server_rss_mb(server) - before
    assert grown < RSS_BOUND_MB, f"the server grew {grown:.1f} MB"
    for ws in clients:
        ws.transport.abort()
    assert http_status(server.url + "/healthz") == 200
