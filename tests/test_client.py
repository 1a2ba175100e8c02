"""`agenthost.client`: the SSE parser (any split of a byte stream parses to the same events),
the retry budget, and the client against a real `agenthost serve` process — sessions,
history, idempotent turns, streams over SSE and WebSocket, read-only resume, failover from a
dead URL, and retries that reuse the Idempotency-Key and honour Retry-After."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from agenthost.client import (
    AgentHostClient,
    APIError,
    Chunk,
    Done,
    NotFound,
    RetriesExhausted,
    RetryPolicy,
    StreamEvent,
    TurnFailed,
)
from agenthost.client.errors import RetryableFailure
from agenthost.client.retry import Endpoints, RetryBudget, parse_retry_after
from agenthost.client.sse_parser import ServerSentEvent, SSEParser
from tests.fixtures.agenthost import AgentHostProcess, free_port
from tests.fixtures.aiohttp_server import served

# -- the SSE parser -----------------------------------------------------------------------

_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\0"), max_size=20)
_name = st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=8)
_event = st.tuples(
    st.one_of(st.none(), _name),  # event name
    st.lists(_text, min_size=1, max_size=3),  # data lines
    st.one_of(st.none(), st.integers(0, 10**6).map(str)),  # id
    st.booleans(),  # a comment line before it
)
_newline = st.sampled_from(["\n", "\r\n", "\r"])


def _encode_stream(
    events: list[tuple[str | None, list[str], str | None, bool]], newlines: list[str]
) -> tuple[bytes, list[ServerSentEvent]]:
    """The events as an event stream (line endings drawn from `newlines`), and what a
    correct parser reads from it."""
    out: list[str] = []
    expected: list[ServerSentEvent] = []
    last_id: str | None = None
    for i, (name, lines, event_id, comment) in enumerate(events):
        nl = newlines[i % len(newlines)]
        if comment:
            out.append(": keep-alive" + nl)
        if event_id is not None:
            out.append(f"id: {event_id}{nl}")
            last_id = event_id
        if name is not None:
            out.append(f"event:{name}{nl}")
        out.extend(f"data: {line}{nl}" for line in lines)
        out.append(nl)
        expected.append(ServerSentEvent(name or "message", "\n".join(lines), last_id))
    return "".join(out).encode(), expected


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(_event, max_size=8),
    newlines=st.lists(_newline, min_size=1, max_size=3),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
)
def test_any_split_of_a_byte_stream_parses_to_the_same_events(
    events: list[tuple[str | None, list[str], str | None, bool]],
    newlines: list[str],
    cuts: list[int],
) -> None:
    stream, expected = _encode_stream(events, newlines)
    whole = SSEParser()
    assert whole.feed(stream) + whole.finish() == expected
    points = sorted({c % (len(stream) + 1) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    parser = SSEParser()
    split = [event for piece in pieces for event in parser.feed(piece)]
    assert split + parser.finish() == expected
    one = SSEParser()
    byte_by_byte = [e for i in range(len(stream)) for e in one.feed(stream[i : i + 1])]
    assert byte_by_byte + one.finish() == expected


def test_the_parser_follows_the_event_stream_rules() -> None:
    parser = SSEParser()
    stream = (
        "\ufeffdata:no space\n\n"  # a BOM is dropped; the space after ':' is optional
        "data\n\n"  # a field with no colon: empty value
        "event: only a name\n\n"  # no data: nothing dispatched
        "id: 7\nretry: 1500\ndata: a\ndata: b\n\n"
        "id: bad\0id\ndata: c\n\n"  # an id with NUL is ignored
        "data: unterminated"
    ).encode()
    events = parser.feed(stream)
    assert [(e.event, e.data, e.id) for e in events] == [
        ("message", "no space", None),
        ("message", "", None),
        ("message", "a\nb", "7"),
        ("message", "c", "7"),
    ]
    assert events[2].retry == 1500
    assert parser.last_event_id == "7"
    # UTF-8 split inside a character is decoded once the line is whole.
    snow = "data: ☃\n\n".encode()
    p2 = SSEParser()
    assert p2.feed(snow[:7]) == [] and p2.feed(snow[7:]) == [ServerSentEvent(data="☃")]


# -- the retry budget ---------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_fails_over_at_once_then_backs_off_with_jitter_within_bounds() -> None:
    clock = _Clock()
    policy = RetryPolicy(max_attempts=5, max_retry_time=100, initial_backoff=1, max_backoff=3)
    budget = RetryBudget(policy, endpoints_count=2, clock=clock, uniform=lambda a, b: b)
    gone = RetryableFailure("refused", failover=True)
    assert budget.failed(gone) == 0.0  # the other process, now
    assert budget.failed(gone) == 2.0  # both tried: back off (ceiling 1 * 2**1)
    assert budget.failed(gone) == 3.0  # capped at max_backoff
    assert budget.failed(RetryableFailure("busy", failover=False, retry_after=7)) == 7.0
    with pytest.raises(RetriesExhausted) as exc:
        budget.failed(gone)
    assert exc.value.attempts == 5 and exc.value.last is gone
    budget.progressed()  # progress restores the budget
    assert budget.failed(gone) == 0.0


def test_the_budget_stops_when_time_is_up_or_retry_after_is_too_long() -> None:
    clock = _Clock()
    policy = RetryPolicy(max_attempts=100, max_retry_time=10, max_retry_after=5)
    budget = RetryBudget(policy, clock=clock, uniform=lambda a, b: b)
    with pytest.raises(RetriesExhausted):
        budget.failed(RetryableFailure("503", failover=True, retry_after=6))
    budget = RetryBudget(policy, clock=clock, uniform=lambda a, b: b)
    assert budget.failed(RetryableFailure("503", failover=True, retry_after=4)) == 4
    clock.now = 9.0
    with pytest.raises(RetriesExhausted):  # 9 s spent + 1.5 s Retry-After > 10 s
        budget.failed(RetryableFailure("503", failover=True, retry_after=1.5))


def test_retry_after_is_seconds_or_an_http_date_and_endpoints_rotate() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    in_a_minute = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))
    assert 55 < (parse_retry_after(in_a_minute) or 0) <= 61
    endpoints = Endpoints(["http://a/", "http://b"])
    assert endpoints.current == "http://a"
    assert endpoints.failover("http://a") == "http://b"
    assert endpoints.failover("http://a") == "http://b"  # someone else moved on already
    assert endpoints.failover("http://b") == "http://a"
    with pytest.raises(ValueError):
        Endpoints([])
    with pytest.raises(ValueError):
        Endpoints(["ftp://x"])


# -- against a real server ----------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentHostProcess]:
    tmp = tmp_path_factory.mktemp("client")
    proc = AgentHostProcess(
        {
            "store": f"sqlite:///{tmp / 'client.db'}",
            "llm": "sim://?tokens_per_s=400&words=12",
            "chunk_coalesce_ms": 0,
        },
        tmp / "agenthost.log",
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
async def client(server: AgentHostProcess) -> AsyncIterator[AgentHostClient]:
    async with AgentHostClient(server.url) as c:
        yield c


async def test_sessions_and_history(client: AgentHostClient) -> None:
    session = await client.create_session(metadata={"user": "ann"})
    assert session.session_id.startswith("s_") and session.metadata == {"user": "ann"}
    named = await client.create_session("client-named")
    assert named.session_id == "client-named" and named.turns == 0
    with pytest.raises(APIError) as exc:
        await client.create_session("client-named")
    assert exc.value.status == 409 and exc.value.code == "session_exists"
    first = await client.turn(session.session_id, "one")
    await client.turn(session.session_id, "two")
    got = await client.get_session(session.session_id)
    assert got.turns == 2
    history = await client.messages(session.session_id)
    assert [(m.role, m.turn_id) for m in history][:2] == [
        ("user", first.turn_id),
        ("assistant", first.turn_id),
    ]
    assert [m.content for m in history if m.role == "user"] == ["one", "two"]
    page = await client.messages(session.session_id, limit=2, before=history[2].seq)
    assert page == history[:2]
    assert await client.delete_session(session.session_id) is True
    assert await client.delete_session(session.session_id) is False
    with pytest.raises(NotFound):
        await client.get_session(session.session_id)


async def test_a_turn_retried_with_its_key_answers_once(client: AgentHostClient) -> None:
    sid = "client-idempotent"
    result = await client.turn(sid, "hello there", turn_id="client-idem-1")
    assert result.turn_id == "client-idem-1" and "hello there" in result.response
    again = await client.turn(sid, "hello there", turn_id="client-idem-1")
    assert again == result
    assert (await client.get_session(sid)).turns == 1
    status = await client.turn_status(sid, "client-idem-1")
    assert status.status == "completed" and status.response == result.response
    with pytest.raises(NotFound):
        await client.turn_status(sid, "no-such-turn")


async def test_errors_that_retrying_cannot_fix_are_raised_at_once(
    client: AgentHostClient,
) -> None:
    t0 = time.monotonic()
    with pytest.raises(APIError) as exc:
        await client.turn("client-errors", "")
    assert exc.value.status == 422 and time.monotonic() - t0 < 2
    with pytest.raises(ValueError):
        await client.turn("not a valid id!", "hi")


async def _collect(events: AsyncIterable[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in events]


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_a_stream_yields_numbered_chunks_then_done(
    client: AgentHostClient, transport: str
) -> None:
    stream = client.stream("client-stream", "stream me please", transport=transport)  # type: ignore[arg-type]
    events = await _collect(stream)
    assert isinstance(events[-1], Done) and len(events) > 2
    chunks = [e for e in events if isinstance(e, Chunk)]
    assert [e.seq for e in events] == sorted({e.seq for e in events})
    assert "".join(c.text for c in chunks) == events[-1].result.response == stream.text
    assert "stream me please" in stream.text and stream.reconnects == 0
    status = await client.turn_status("client-stream", stream.turn_id)
    assert status.status == "completed" and status.response == stream.text


async def test_resume_reads_a_finished_turn_after_any_seq(client: AgentHostClient) -> None:
    stream = client.stream("client-resume", "read me twice")
    events = await _collect(stream)
    tail = await _collect(client.resume("client-resume", stream.turn_id, after=2))
    assert [e.seq for e in tail] == [e.seq for e in events if e.seq > 2]
    resumed = client.resume("client-resume", stream.turn_id)
    assert await resumed.collect() == stream.result
    with pytest.raises(NotFound):
        await client.resume("client-resume", "never-ran").collect()


async def test_a_failed_turn_raises_turn_failed(tmp_path: Path) -> None:
    proc = AgentHostProcess(
        {"store": f"sqlite:///{tmp_path / 'f.db'}", "llm": "sim://?model=error-500"},
        tmp_path / "agenthost.log",
    )
    proc.start()
    try:
        async with AgentHostClient(proc.url) as client:
            with pytest.raises(TurnFailed) as exc:
                await client.turn("client-fails", "hi", turn_id="client-fail-1")
            assert exc.value.code == "llm_unavailable" and exc.value.turn_id == "client-fail-1"
            with pytest.raises(TurnFailed):
                await client.stream("client-fails", "hi", transport="ws").collect()
    finally:
        proc.stop()


async def test_a_dead_url_fails_over_to_the_next(server: AgentHostProcess) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with AgentHostClient([dead, server.url]) as client:
        result = await client.turn("client-failover", "over there")
        assert "over there" in result.response and client.base_url == server.url
        stream = client.stream("client-failover", "and stream", transport="ws")
        assert "and stream" in (await stream.collect()).response
    async with AgentHostClient([dead, server.url]) as client:
        await client.stream("client-failover", "sse too").collect()
        assert client.base_url == server.url


async def test_nothing_reachable_gives_up_within_the_policy() -> None:
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    policy = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05)
    async with AgentHostClient(dead, retry=policy) as client:
        t0 = time.monotonic()
        with pytest.raises(RetriesExhausted) as exc:
            await client.turn("client-nowhere", "hello")
        assert exc.value.attempts == 4 and time.monotonic() - t0 < 2
        with pytest.raises(RetriesExhausted):
            await client.stream("client-nowhere", "hello", transport="ws").collect()


# -- retries, seen from the server's side -------------------------------------------------


class RecordingServer:
    """A small HTTP server that answers the first `refusals` turns with 503 + Retry-After,
    then 200, and records each request's headers."""

    def __init__(self, refusals: int, retry_after: str) -> None:
        self.refusals = refusals
        self.retry_after = retry_after
        self.requests: list[tuple[float, dict[str, str]]] = []
        self._serving = contextlib.AsyncExitStack()
        self.url = ""

    async def turn(self, request: web.Request) -> web.Response:
        self.requests.append((time.monotonic(), dict(request.headers)))
        if len(self.requests) <= self.refusals:
            return web.json_response(
                {"error": {"code": "draining", "message": "try later"}},
                status=503,
                headers={"Retry-After": self.retry_after},
            )
        key = request.headers["Idempotency-Key"]
        return web.json_response({"session_id": "s", "turn_id": key, "response": "ok"})

    async def __aenter__(self) -> RecordingServer:
        app = web.Application()
        app.router.add_post("/v1/sessions/{sid}/turns", self.turn)
        port = await self._serving.enter_async_context(served(app))
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._serving.aclose()


async def test_retries_reuse_the_key_honour_retry_after_and_send_the_api_key() -> None:
    async with (
        RecordingServer(refusals=2, retry_after="1") as server,
        AgentHostClient(server.url, api_key="sekret") as client,
    ):
        result = await client.turn("s", "hi")
    assert result.response == "ok"
    times = [t for t, _ in server.requests]
    headers = [h for _, h in server.requests]
    assert len(headers) == 3
    assert {h["Idempotency-Key"] for h in headers} == {result.turn_id}
    assert all(h["Authorization"] == "Bearer sekret" for h in headers)
    assert times[1] - times[0] >= 0.95 and times[2] - times[1] >= 0.95


async def test_a_retry_after_beyond_the_policy_is_not_waited_for() -> None:
    policy = RetryPolicy(max_retry_after=5)
    async with (
        RecordingServer(refusals=10, retry_after="3600") as server,
        AgentHostClient(server.url, retry=policy) as client,
    ):
        t0 = time.monotonic()
        with pytest.raises(RetriesExhausted) as exc:
            await client.turn("s", "hi")
    assert time.monotonic() - t0 < 2 and "503" in str(exc.value)
    assert len(server.requests) == 1


async def test_the_api_key_goes_with_the_websocket_handshake() -> None:
    seen: list[str | None] = []

    async def ws(request: web.Request) -> web.WebSocketResponse:
        seen.append(request.headers.get("Authorization"))
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        frame = await sock.receive_json()
        done = {"type": "done", "turn_id": frame["turn_id"], "seq": 1, "response": "r"}
        await sock.send_json(done)
        await sock.close()
        return sock

    app = web.Application()
    app.router.add_get("/v1/sessions/{sid}/ws", ws)
    async with served(app) as port:
        async with AgentHostClient(f"http://127.0.0.1:{port}", api_key="k1") as client:
            result = await client.stream("s", "hi", transport="ws").collect()
        assert result.response == "r" and seen == ["Bearer k1"]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        AgentHostClient([])
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    client = AgentHostClient("http://127.0.0.1:1")
    with pytest.raises(ValueError):
        client.stream("s", "hi", transport="carrier-pigeon")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        client.resume("s", "bad turn id")
