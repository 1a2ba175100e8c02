"""An SSE client that reads slowly: the server stops pushing chunks to it while its socket is
full, then catches up from the stream, so every event still arrives once and in order (and
the turn itself never waits for the client)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from tests.fixtures.agenthost import AgentHostProcess, async_wait_until
from tests.test_streaming import parse_sse


async def test_a_slow_sse_reader_gets_every_event_once_in_order(
    agenthost_factory: Callable[..., AgentHostProcess],
) -> None:
    # About 1 MB of events in 0.5 s, far more than the socket buffers hold while the client
    # does not read: its own 4 KB and the server's send buffer, held to 64 KB.
    server = agenthost_factory(
        llm="sim://?tokens_per_s=40000&words=20000",
        chunk_coalesce_ms=0,
        socket_send_buffer=64 * 1024,
    )
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", server.port))
    body = b'{"message": "a long answer please", "stream": true}'
    await loop.sock_sendall(
        sock,
        b"POST /v1/sessions/slow/turns HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
    )
    received = bytearray(await loop.sock_recv(sock, 1024))
    # The client stalls while the model writes the whole answer and the turn commits...
    await async_wait_until(
        lambda: len(history(server, "slow")) == 2, 60, "the turn to commit unread"
    )
    # ... then reads as fast as it can.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    deadline = time.monotonic() + 60
    while not received.endswith(b"0\r\n\r\n"):
        assert time.monotonic() < deadline, "the stream did not end"
        data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 30)
        if not data:
            break
        received += data
    sock.close()
    head, _, chunked = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    events = parse_sse(_dechunk(chunked).decode())
    assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))
    assert events[-1][1] == "done"
    text = "".join(data["text"] for _, kind, data in events if kind == "chunk")
    assert text == events[-1][2]["response"]
    assert len(text) > 50_000


def history(server: AgentHostProcess, session_id: str) -> list[dict[str, Any]]:
    url = f"{server.url}/v1/sessions/{session_id}/messages"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            messages: list[dict[str, Any]] = json.loads(resp.read())["messages"]
    except urllib.error.HTTPError:
        return []  # not created yet
    return messages


def _dechunk(body: bytes) -> bytes:
    """HTTP/1.1 chunked transfer coding, undone."""
    out = bytearray()
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += body[:size]
        body = body[size + 2 :]
    return bytes(out)
