"""Connection bounds on real processes, on the lean and the stock protocols: slowloris clients
and unfinished bodies are cut at their deadline with 408, idle keep-alive connections closed,
connections past --max-connections refused while the probes answer, and the open-files limit
raised at start-up."""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.agenthost import AgentHostProcess

pytestmark = pytest.mark.parametrize("protocols", ["auto", "stock"])

DEADLINE_SLACK_S = 3.0  # a loaded 2-core machine: the timer fires late, never early


async def closed_after(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (fails past `timeout`)."""
    return await asyncio.wait_for(reader.read(), timeout)


async def test_slowloris_headers_are_cut_at_the_header_deadline(
    agenthost_factory: Callable[..., AgentHostProcess], protocols: str
) -> None:
    server = agenthost_factory(server_protocols=protocols, header_timeout=1)

    async def slow_client() -> tuple[float, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        started = time.monotonic()
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000

        async def trickle() -> None:
            for byte in request:  # one byte every 50 ms: never finishes within the deadline
                writer.write(bytes([byte]))
                await asyncio.sleep(0.05)

        sender = asyncio.ensure_future(trickle())
        try:
            answer = await closed_after(reader, 1 + DEADLINE_SLACK_S)
        finally:
            sender.cancel()
            writer.close()
        return time.monotonic() - started, answer

    results = await asyncio.gather(*(slow_client() for _ in range(20)))
    for elapsed, answer in results:
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        assert elapsed >= 0.9, "cut before the deadline"
    metrics = await http_get(server.port, "/metrics")
    assert 'agenthost_connections_refused_total{reason="headers_timeout"} 20' in metrics


async def test_an_unfinished_body_is_cut_at_the_body_deadline(
    agenthost_factory: Callable[..., AgentHostProcess], protocols: str
) -> None:
    server = agenthost_factory(server_protocols=protocols, body_timeout=1)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"POST /v1/sessions/s/turns HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n" + b'{"message": "'
    )
    started = time.monotonic()
    answer = await closed_after(reader, 1 + DEADLINE_SLACK_S)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert time.monotonic() - started >= 0.9
    metrics = await http_get(server.port, "/metrics")
    assert 'agenthost_connections_refused_total{reason="body_timeout"} 1' in metrics


async def test_idle_connections_are_closed(
    agenthost_factory: Callable[..., AgentHostProcess], protocols: str
) -> None:
    server = agenthost_factory(server_protocols=protocols, header_timeout=1, keep_alive_timeout=1)
    # A connection that never sends anything.
    silent_reader, silent = await asyncio.open_connection("127.0.0.1", server.port)
    # A kept-alive connection after one answered request.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    started = time.monotonic()
    assert await closed_after(reader, 1 + DEADLINE_SLACK_S) == b"", "idle keep-alive closed"
    assert time.monotonic() - started >= 0.5
    assert (await closed_after(silent_reader, DEADLINE_SLACK_S)).startswith(b"HTTP/1.1 408")
    writer.close()
    silent.close()


async def test_past_the_connection_cap_only_probes_answer(
    agenthost_factory: Callable[..., AgentHostProcess], protocols: str
) -> None:
    cap = 20
    server = agenthost_factory(server_protocols=protocols, max_connections=cap, header_timeout=60)
    held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(cap)]
    try:
        assert (await http_get(server.port, "/healthz")).startswith("HTTP/1.1 200")
        assert (await http_get(server.port, "/readyz")).startswith("HTTP/1.1 200")
        refused = await http_get(server.port, "/v1/sessions/s")
        assert refused.startswith("HTTP/1.1 503") and '"overloaded"' in refused
        assert "retry-after: 1" in refused.lower()
        # Past the cap and the probe reserve, a connection is closed as it is accepted.
        more = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(80)]
        closed = 0
        for reader, _ in more:
            try:
                closed += await asyncio.wait_for(reader.read(), 5) == b""
            except ConnectionResetError:
                closed += 1
            except TimeoutError:
                pass  # held in the probe reserve
        assert closed >= 80 - 64 - 2, closed
        for _, writer in more:
            writer.close()
    finally:
        for _, writer in held:
            writer.close()
    metrics = await http_get(server.port, "/metrics")
    line = next(
        x for x in metrics.splitlines() if x.startswith("agenthost_connections_refused_total")
        and "over_capacity" in x
    )  # fmt: skip
    assert int(line.split()[-1]) >= 1
    deadline = time.monotonic() + 10
    while not (await http_get(server.port, "/v1/sessions/s")).startswith("HTTP/1.1 404"):
        assert time.monotonic() < deadline, "below the cap again, every route answers"
        await asyncio.sleep(0.05)


def test_the_open_files_limit_is_raised_at_start_up(
    agenthost_factory: Callable[..., AgentHostProcess], protocols: str
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))  # the child inherits it
    try:
        server = agenthost_factory(server_protocols=protocols)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    limits = Path(f"/proc/{server.pid}/limits").read_text()
    line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
    child_soft, child_hard = line.split()[3:5]
    assert child_soft == child_hard == str(hard), line


async def http_get(port: int, path: str) -> str:
    """One GET on a fresh connection, with Connection: close; the whole answer as text."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer.decode(errors="replace")
