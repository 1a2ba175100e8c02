"""The client's streams survive the process or the connection serving them (issue #5's
acceptance tests): kill -9 the process serving a live SSE or WebSocket stream, drain it
(WebSocket 1012), or cut the connection while the server lives, and the client resumes —
on the other process when its own is gone — with no event missing or repeated and the
final text equal to the committed response."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import aiohttp
import pytest

from agenthost.client import (
    AgentHostClient,
    APIError,
    Chunk,
    Done,
    NotFound,
    Reset,
    ResponseStream,
    StreamEvent,
    TurnFailed,
)
from tests.fixtures.agenthost import AgentHostProcess

# About 2 s of answer at 20 tokens/s: time to act after the first chunks.
SLOW_LLM = "sim://?ttft_ms=50&tokens_per_s=20&words=30"
ADMIN_TOKEN = "client-resume-admin"
Transport = Literal["sse", "ws"]
Factory = Callable[..., AgentHostProcess]


def fleet(factory: Factory, redis_url: str, **extra: Any) -> tuple[AgentHostProcess, ...]:
    """Two processes on one Redis (a private test fleet: no auth); a killed process's lease
    expires after 1 s."""
    common = {"store": redis_url, "llm": SLOW_LLM, "chunk_coalesce_ms": 0, "lease_ttl": 1}
    common["allow_no_auth"] = True
    return factory(**common, **extra), factory(**common, **extra)


async def read_all(
    stream: ResponseStream, after_chunks: int, act: Callable[[], Any]
) -> list[StreamEvent]:
    """Every event of `stream`; `act()` is called (awaited if it returns an awaitable) once
    `after_chunks` chunks have arrived."""
    events: list[StreamEvent] = []
    chunks = 0
    async for event in stream:
        events.append(event)
        if isinstance(event, Chunk):
            chunks += 1
            if chunks == after_chunks:
                outcome = act()
                if asyncio.iscoroutine(outcome):
                    await outcome
    return events


async def poll(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Await `condition()` until true; fail after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def check_exactly_once(
    client: AgentHostClient, session_id: str, stream: ResponseStream, events: list[StreamEvent]
) -> None:
    """Seqs strictly rising; the chunks after the last reset spell the committed response;
    the session holds the turn once."""
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs)), seqs
    assert isinstance(events[-1], Done)
    last_reset = max((i for i, e in enumerate(events) if isinstance(e, Reset)), default=-1)
    text = "".join(e.text for e in events[last_reset + 1 :] if isinstance(e, Chunk))
    status = await client.turn_status(session_id, stream.turn_id)
    assert status.status == "completed"
    assert text == status.response == events[-1].result.response == stream.text
    history = await client.messages(session_id)
    assert [m.role for m in history if m.turn_id == stream.turn_id] == ["user", "assistant"]


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_a_killed_process_stream_resumes_on_the_other(
    agenthost_factory: Factory, redis_url: str, transport: Transport
) -> None:
    a, b = fleet(agenthost_factory, redis_url)
    by_url = {a.url: a, b.url: b}
    async with AgentHostClient([a.url, b.url]) as client:
        sid = f"resume-kill-{transport}"
        stream = client.stream(sid, "survive a crash", transport=transport)

        def kill_serving() -> None:
            assert stream.base_url is not None
            by_url[stream.base_url].kill()

        events = await read_all(stream, 3, kill_serving)
        assert stream.reconnects >= 1 and stream.base_url == b.url
        assert a.proc is not None and a.proc.poll() is not None
        assert any(isinstance(e, Reset) for e in events)  # the turn ran again on b
        await check_exactly_once(client, sid, stream, events)


async def test_a_plain_turn_whose_process_is_killed_completes_on_the_other_once(
    agenthost_factory: Factory, redis_url: str
) -> None:
    a, b = fleet(agenthost_factory, redis_url)
    async with AgentHostClient([a.url, b.url]) as client, AgentHostClient(b.url) as observer:
        sid = "resume-kill-plain"
        turn = asyncio.create_task(client.turn(sid, "survive a crash", turn_id="plain-1"))

        async def running() -> bool:
            with contextlib.suppress(NotFound):
                return (await observer.turn_status(sid, "plain-1")).status == "running"
            return False

        await poll(running, 10, "the turn to run on a")
        a.kill()
        result = await turn
        assert "survive a crash" in result.response and client.base_url == b.url
        status = await observer.turn_status(sid, "plain-1")
        assert status.status == "completed" and status.response == result.response
        history = await observer.messages(sid)
        assert [m.role for m in history if m.turn_id == "plain-1"] == ["user", "assistant"]


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_a_turn_cancelled_by_a_drain_resumes_on_the_other_process(
    agenthost_factory: Factory, redis_url: str, transport: Transport
) -> None:
    """The drain outlasts its timeout and cancels the turn (`interrupted`); over WebSocket
    the process then closes with 1012, over SSE its /readyz says it drains."""
    a, b = fleet(agenthost_factory, redis_url, admin_token=ADMIN_TOKEN, drain_timeout=0.3)
    async with AgentHostClient([a.url, b.url]) as client:
        sid = f"resume-drain-{transport}"
        stream = client.stream(sid, "survive a drain", transport=transport)

        async def drain_a() -> None:
            auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            async with (
                aiohttp.ClientSession() as http,
                http.post(f"{a.url}/admin/drain", headers=auth) as resp,
            ):
                assert resp.status == 202

        events = await read_all(stream, 3, drain_a)
        assert stream.reconnects >= 1 and stream.base_url == b.url
        await check_exactly_once(client, sid, stream, events)


class CuttingProxy:
    """A loopback TCP proxy to one port whose open connections the test can cut (both
    sides aborted, as a network failure would), while new connections still pass."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.transports: set[asyncio.WriteTransport] = set()
        self.server: asyncio.Server | None = None
        self.url = ""
        self.connections = 0

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        ends = {writer.transport, up_writer.transport}
        self.transports |= ends
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self.transports -= ends

    def cut(self) -> None:
        for transport in list(self.transports):
            transport.abort()

    async def __aenter__(self) -> CuttingProxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.cut()
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def proxied(agenthost_factory: Factory) -> AsyncIterator[tuple[CuttingProxy, str]]:
    server = agenthost_factory(llm=SLOW_LLM, chunk_coalesce_ms=0)
    async with CuttingProxy(server.port) as proxy:
        yield proxy, server.url


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_a_cut_connection_resumes_on_the_same_live_process(
    proxied: tuple[CuttingProxy, str], transport: Transport
) -> None:
    proxy, _ = proxied
    async with AgentHostClient(proxy.url) as client:
        sid = f"resume-cut-{transport}"
        stream = client.stream(sid, "survive a cut", transport=transport)
        events = await read_all(stream, 3, proxy.cut)
        assert stream.reconnects == 1 and stream.resets == 0  # the turn ran once
        assert proxy.connections >= 2
        await check_exactly_once(client, sid, stream, events)


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_a_turn_interrupted_by_a_newer_one_fails_and_is_not_resumed(
    proxied: tuple[CuttingProxy, str], transport: Transport
) -> None:
    """`interrupted` from a process that stays up is the turn's outcome, not a reason to
    run it again."""
    _, url = proxied
    async with AgentHostClient(url) as client:
        sid = f"resume-interrupted-{transport}"
        stream = client.stream(sid, "first", transport=transport)

        async def interrupt() -> None:
            await client.turn(sid, "second", on_busy="interrupt")

        with pytest.raises(TurnFailed) as exc:
            await read_all(stream, 2, interrupt)
        assert exc.value.code == "interrupted" and stream.reconnects == 0
        status = await client.turn_status(sid, stream.turn_id)
        assert status.status == "failed"


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_on_busy_reject_is_answered_at_once_not_retried(
    proxied: tuple[CuttingProxy, str], transport: Transport
) -> None:
    _, url = proxied
    async with AgentHostClient(url) as client:
        sid = f"resume-reject-{transport}"
        first = client.stream(sid, "first", transport=transport)

        async def rejected() -> None:
            second = client.stream(sid, "second", transport=transport, on_busy="reject")
            with pytest.raises(APIError) as exc:
                await second.collect()
            assert exc.value.status == 409 and exc.value.code == "session_busy"
            assert second.reconnects == 0
            with pytest.raises(APIError):
                await client.turn(sid, "third", on_busy="reject")

        events = await read_all(first, 1, rejected)
        assert isinstance(events[-1], Done) and first.reconnects == 0


async def test_leaving_a_stream_early_closes_it_and_on_disconnect_decides_the_turn(
    proxied: tuple[CuttingProxy, str],
) -> None:
    _, url = proxied
    async with AgentHostClient(url) as client:
        kept = client.stream("resume-leave-1", "keep going", transport="ws")
        async with kept:
            async for _ in kept:
                break
        dropped = client.stream("resume-leave-2", "stop there", on_disconnect="cancel")
        async with dropped:
            async for _ in dropped:
                break

        async def ended(sid: str, turn_id: str, status: str) -> bool:
            return (await client.turn_status(sid, turn_id)).status == status

        await poll(lambda: ended("resume-leave-1", kept.turn_id, "completed"), 10, "kept")
        await poll(lambda: ended("resume-leave-2", dropped.turn_id, "failed"), 10, "dropped")
        assert kept.result is None and kept.reconnects == 0
