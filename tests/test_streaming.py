"""Streams that survive a lost connection: numbered events in a broker (in-process and Redis
Streams), coalesced chunks, and resuming with Last-Event-ID on another process."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, get_args

import aiohttp
import hiredis
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agenthost.brokers import StreamBroker, StreamEvent, create_broker
from agenthost.brokers import redis as redis_broker
from agenthost.brokers.base import EventKind, forward
from agenthost.brokers.memory import MemoryBroker
from agenthost.brokers.redis import _commands, _xadd_chunk, _xadd_head
from agenthost.core.errors import StoreUnavailable
from agenthost.observability.metrics import Metrics
from agenthost.turns.chunks import ChunkFlusher, TurnStream, chunk_data
from agenthost.web.sse import native_frame
from tests.fixtures.agenthost import AgentHostProcess
from tests.fixtures.redis import RedisServer, command_calls, port_of, redis_cli


@pytest.fixture(params=["memory", "redis"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[StreamBroker]:
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    b = create_broker(url, stream_ttl=60)
    await b.open()
    yield b
    await b.close()


async def collect(
    broker: StreamBroker, sid: str, tid: str, after: int, wait: float = 2.0
) -> list[StreamEvent]:
    return [e async for e in broker.read(sid, tid, after, wait)]


async def test_events_are_read_in_order_from_any_point_until_the_final_one(
    broker: StreamBroker,
) -> None:
    sid, tid = f"s-{uuid.uuid4().hex[:8]}", "t1"
    broker.start(sid, tid)
    reader = asyncio.create_task(collect(broker, sid, tid, 0))
    for seq in range(1, 4):
        await broker.publish(sid, tid, StreamEvent(seq, "chunk", b'{"text":"%d"}' % seq))
    await broker.publish(sid, tid, StreamEvent(4, "done", b"{}"))
    assert [e.seq for e in await reader] == [1, 2, 3, 4]
    assert [e.seq for e in await collect(broker, sid, tid, 2)] == [3, 4]
    assert (await collect(broker, sid, tid, 3))[0].kind == "done"
    assert await broker.exists(sid, tid)


async def test_forgetting_a_session_deletes_its_streams_and_ends_their_readers(
    broker: StreamBroker,
) -> None:
    """A session's ended streams go at once; a running one is its publisher's to drop once
    it has published its end (its local readers get that end first)."""
    sid, other = f"s-{uuid.uuid4().hex[:8]}", f"s-{uuid.uuid4().hex[:8]}"
    for session in (sid, other):
        for tid in ("t1", "t2"):
            broker.start(session, tid)
            await broker.publish(session, tid, StreamEvent(1, "chunk", b'{"text":"x"}'))
        await broker.publish(session, "t2", StreamEvent(2, "done", b"{}"))
    waiting = asyncio.create_task(collect(broker, sid, "t1", 1, wait=30))
    await asyncio.sleep(0)  # the reader is waiting for event 2
    await broker.forget(sid)
    assert not await broker.exists(sid, "t2") and await broker.last(sid, "t2") is None
    assert not waiting.done()
    await broker.forget(sid, "t1")  # its publisher, after its end
    assert await asyncio.wait_for(waiting, 5) == []
    assert isinstance(broker, MemoryBroker) and not broker.local(sid, "t1")
    for tid in ("t1", "t2"):
        assert await broker.exists(other, tid)  # another session's streams stay


@pytest.mark.parametrize("url_fixture", ["redis_url", "redis_cluster_url"])
async def test_forgetting_a_session_leaves_a_running_stream_to_its_publisher_on_redis(
    request: pytest.FixtureRequest, url_fixture: str
) -> None:
    """A reader on another process (reading Redis, not the publisher's memory) of a turn
    still running when its session is deleted gets that turn's error, however long the
    publisher takes to notice: the stream stays until its end is published."""
    url = request.getfixturevalue(url_fixture)
    publisher, elsewhere = (create_broker(url, stream_ttl=60) for _ in range(2))
    await publisher.open()
    await elsewhere.open()
    try:
        sid = f"s-{uuid.uuid4().hex[:8]}"
        publisher.start(sid, "running")
        await publisher.publish(sid, "running", StreamEvent(1, "chunk", b'{"text":"x"}'))
        publisher.start(sid, "ended")
        await publisher.publish(sid, "ended", StreamEvent(1, "done", b"{}"))
        reader = asyncio.create_task(collect(elsewhere, sid, "running", 1, wait=30))
        await publisher.forget(sid)
        assert not await elsewhere.exists(sid, "ended")
        assert await elsewhere.exists(sid, "running")
        assert not reader.done()
        error = StreamEvent(2, "error", b'{"code":"interrupted","message":"deleted"}')
        await publisher.publish(sid, "running", error)
        assert await asyncio.wait_for(reader, 10) == [error]
        await publisher.forget(sid, "running")  # its publisher, after its end
        assert not await elsewhere.exists(sid, "running")
        # A reader elsewhere that was between two reads as the end came and went finds the
        # stream gone: it ends with an error all the same, never just stops.
        late = await asyncio.wait_for(collect(elsewhere, sid, "running", 1, wait=30), 10)
        assert [(e.seq, e.kind) for e in late] == [(2, "error")]
        assert msgspec.json.decode(late[0].data)["code"] == "interrupted"
    finally:
        await publisher.close()
        await elsewhere.close()


async def test_a_stream_nobody_publishes_ends_after_the_wait(broker: StreamBroker) -> None:
    t0 = time.monotonic()
    assert await collect(broker, "nobody", "t", 0, wait=0.3) == []
    assert time.monotonic() - t0 < 3
    assert not await broker.exists("nobody", "t")


async def until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def record(seen: list[int]) -> Callable[[StreamEvent], None]:
    """An `emit` that notes each event's number."""
    return lambda event: seen.append(event.seq)


def chunk(seq: int) -> StreamEvent:
    return StreamEvent(seq, "chunk", b'{"text":"%d"}' % seq)


async def test_a_local_reader_is_handed_each_event_by_the_publish_itself(
    broker: StreamBroker,
) -> None:
    sid, tid = f"s-{uuid.uuid4().hex[:8]}", "t1"
    broker.start(sid, tid)
    await broker.publish(sid, tid, chunk(1))  # there before the reader: sent first
    seen: list[int] = []

    def emit(event: StreamEvent) -> None:
        seen.append(event.seq)

    forwarding = asyncio.ensure_future(forward(broker.read(sid, tid, 0, 5.0), emit))
    await asyncio.sleep(0)  # the reader catches up and listens
    assert seen == [1]
    for seq in (2, 3):
        await broker.publish(sid, tid, chunk(seq))
        assert seen[-1] == seq  # sent by the publish, with no task woken for it
    await broker.publish(sid, tid, StreamEvent(4, "done", b"{}"))
    await asyncio.wait_for(forwarding, 5)
    assert seen == [1, 2, 3, 4]


async def test_a_slow_local_reader_catches_up_in_order_then_listens_again(
    broker: StreamBroker,
) -> None:
    sid, tid = f"s-{uuid.uuid4().hex[:8]}", "t1"
    broker.start(sid, tid)
    socket_full = asyncio.get_running_loop().create_future()
    seen: list[int] = []

    def emit(event: StreamEvent) -> asyncio.Future[None] | None:
        seen.append(event.seq)
        return socket_full if event.seq == 2 else None  # event 2's send has to wait

    forwarding = asyncio.ensure_future(forward(broker.read(sid, tid, 0, 5.0), emit))
    await asyncio.sleep(0)
    for seq in (1, 2, 3, 4):
        await broker.publish(sid, tid, chunk(seq))
    assert seen == [1, 2]  # nothing more goes out until event 2 is sent
    socket_full.set_result(None)
    await until(lambda: seen == [1, 2, 3, 4], "the reader to catch up from the stream's list")
    await broker.publish(sid, tid, chunk(5))
    assert seen[-1] == 5  # and is handed events by the publisher again
    await broker.publish(sid, tid, StreamEvent(6, "done", b"{}"))
    await asyncio.wait_for(forwarding, 5)
    assert seen == [1, 2, 3, 4, 5, 6]


async def test_a_failing_local_reader_fails_alone(broker: StreamBroker) -> None:
    sid, tid = f"s-{uuid.uuid4().hex[:8]}", "t1"
    broker.start(sid, tid)

    def broken(event: StreamEvent) -> None:
        raise ConnectionResetError("the client is gone")

    seen: list[int] = []
    failing = asyncio.ensure_future(forward(broker.read(sid, tid, 0, 5.0), broken))
    healthy = asyncio.ensure_future(
        forward(broker.read(sid, tid, 0, 5.0), lambda e: seen.append(e.seq))
    )
    await asyncio.sleep(0)
    await broker.publish(sid, tid, chunk(1))  # the publisher does not see the failure
    await broker.publish(sid, tid, StreamEvent(2, "done", b"{}"))
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(failing, 5)
    await asyncio.wait_for(healthy, 5)
    assert seen == [1, 2]


async def test_a_local_reader_ends_when_nothing_arrives_for_the_wait(
    broker: StreamBroker,
) -> None:
    sid, tid = f"s-{uuid.uuid4().hex[:8]}", "t1"
    broker.start(sid, tid)
    await broker.publish(sid, tid, chunk(1))
    seen: list[int] = []
    t0 = time.monotonic()
    await asyncio.wait_for(forward(broker.read(sid, tid, 0, 0.3), lambda e: seen.append(e.seq)), 5)
    assert seen == [1]
    assert 0.25 < time.monotonic() - t0 < 3


async def test_closing_the_broker_ends_its_local_readers() -> None:
    broker = create_broker("memory://")
    broker.start("s", "t")
    forwarding = asyncio.ensure_future(forward(broker.read("s", "t", 0, 60.0), lambda e: None))
    await asyncio.sleep(0)
    assert not forwarding.done()
    await broker.close()
    await asyncio.wait_for(forwarding, 5)


def test_ended_streams_go_after_the_stream_ttl_oldest_first_without_a_scan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process keeps its copy of each ended stream `stream_ttl` seconds (a queue worker
    one per plain turn it ran): the next new stream drops those past it, looking at the
    oldest ended ones only; a stream that ended again later is kept for that later end."""
    from agenthost.brokers.memory import MemoryBroker

    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    broker = MemoryBroker(stream_ttl=10)
    done = StreamEvent(1, "done", b"{}")
    for n in range(3):
        broker.publish_local("s", f"t{n}", done)
        now[0] += 1
    broker.publish_local("s", "t0", StreamEvent(2, "error", b"{}"))  # t0 ends again at 1003
    now[0] = 1012.5  # t1 (ended 1001) and t2 (1002) are past the ttl; t0 is not
    broker.start("s", "new")
    assert [t for t in ("t0", "t1", "t2", "new") if broker.local("s", t)] == ["t0", "new"]
    # Not ended, a stream stays however old.
    now[0] = 2000.0
    broker.start("s", "newer")
    assert [t for t in ("t0", "new", "newer") if broker.local("s", t)] == ["new", "newer"]


async def test_a_redis_stream_is_readable_from_another_broker(redis_url: str) -> None:
    writer, reader = create_broker(redis_url), create_broker(redis_url)
    await writer.open()
    await reader.open()
    try:
        sid, tid = f"s-{uuid.uuid4().hex[:8]}", "t1"
        stream = TurnStream(writer, sid, tid, ChunkFlusher(0.0))
        remote = asyncio.create_task(collect(reader, sid, tid, 0))
        for word in ("a", "b", "c"):
            stream.sink(word)
            await asyncio.sleep(0.01)  # separate windows: three events
        await stream.finish("done", b'{"response":"abc"}')
        events = await remote
        assert [e.kind for e in events] == ["chunk", "chunk", "chunk", "done"]
        texts = [msgspec.json.decode(e.data)["text"] for e in events[:-1]]
        assert "".join(texts) == "abc"
    finally:
        await writer.close()
        await reader.close()


async def test_a_turn_ending_sent_to_the_brokers_inbox_resolves_its_waiters_only(
    broker: StreamBroker,
) -> None:
    sid = f"s-{uuid.uuid4().hex[:8]}"
    first, second = broker.expect_end(sid, "t1"), broker.expect_end(sid, "t1")
    other = broker.expect_end(sid, "t2")
    gone = broker.expect_end(sid, "t3")
    gone.cancel()  # gave up: nothing of it stays
    end = StreamEvent(2, "done", b'{"response":"hi"}')
    broker.notify_end(broker.inbox, sid, "t1", end)
    broker.notify_end(broker.inbox, sid, "t3", end)
    assert await asyncio.wait_for(first, 10) == end
    assert await asyncio.wait_for(second, 10) == end
    assert not other.done()
    other.cancel()


async def test_turn_endings_reach_the_waiting_process_through_redis_in_few_reads(
    redis_url: str,
) -> None:
    """A worker's broker sends each ending to the api's inbox; the api's one reader takes
    what waits there at once: a burst of endings is not one read per turn."""
    api, worker = create_broker(redis_url), create_broker(redis_url)
    await api.open()
    await worker.open()
    try:
        assert api.inbox != worker.inbox
        sid, port = f"s-{uuid.uuid4().hex[:8]}", port_of(redis_url)
        waiters = {f"t{n}": api.expect_end(sid, f"t{n}") for n in range(200)}
        reads_before = command_calls(port, "blmpop")
        stream_reads_before = command_calls(port, "xread")
        await worker.publish(sid, "warm", StreamEvent(1, "chunk", b"{}"))  # connected
        for n, tid in enumerate(waiters):
            worker.notify_end(api.inbox, sid, tid, StreamEvent(1, "done", b'{"n":%d}' % n))
        ended = await asyncio.wait_for(asyncio.gather(*waiters.values()), 20)
        assert [msgspec.json.decode(e.data)["n"] for e in ended] == list(range(200))
        assert command_calls(port, "blmpop") - reads_before < 50
        assert command_calls(port, "xread") == stream_reads_before  # no stream read for them
        assert redis_cli(port, "EXISTS", api.inbox) == "0"  # taken, nothing left behind
    finally:
        await worker.close()
        await api.close()


async def test_a_stream_ended_by_its_first_event_is_kept_for_the_stream_ttl_only(
    redis_url: str,
) -> None:
    """A queued plain turn's stream holds its final event only: kept `stream_ttl` seconds
    as any ended stream, not the hour a running stream is given."""
    broker = create_broker(redis_url, stream_ttl=60)
    await broker.open()
    try:
        sid, port = f"s-{uuid.uuid4().hex[:8]}", port_of(redis_url)
        await broker.publish(sid, "plain", StreamEvent(1, "done", b"{}"))
        await broker.publish(sid, "running", StreamEvent(1, "chunk", b"{}"))
        assert 0 < int(redis_cli(port, "TTL", f"ah:{{{sid}}}:stream:plain")) <= 60
        assert int(redis_cli(port, "TTL", f"ah:{{{sid}}}:stream:running")) > 60
    finally:
        await broker.close()


async def test_an_inbox_ttl_is_set_at_most_once_a_second_and_after_its_last_ending(
    redis_url: str,
) -> None:
    """Endings to one inbox within a second cost one EXPIRE, not one each; an ending sent
    after the inbox's TTL was set in that second still gets it set when the second ends
    (here the list lost its TTL in between, as a list emptied and made again does)."""
    worker = create_broker(redis_url)
    await worker.open()
    try:
        sid, port, inbox = f"s-{uuid.uuid4().hex[:8]}", port_of(redis_url), "ah:ends:t-inbox"
        await worker.publish(sid, "warm", StreamEvent(1, "chunk", b"{}"))  # connected
        expires_before = command_calls(port, "expire")
        for n in range(50):
            worker.notify_end(inbox, sid, f"t{n}", StreamEvent(1, "done", b"{}"))
        await worker.publish(sid, "warm", StreamEvent(2, "chunk", b"{}"))  # written after them
        assert redis_cli(port, "LLEN", inbox) == "50"
        assert command_calls(port, "expire") - expires_before == 1
        assert int(redis_cli(port, "TTL", inbox)) > 0
        redis_cli(port, "PERSIST", inbox)
        worker.notify_end(inbox, sid, "late", StreamEvent(1, "done", b"{}"))
        deadline = time.monotonic() + 10
        while int(redis_cli(port, "TTL", inbox)) < 0:
            assert time.monotonic() < deadline, "the inbox's TTL was not set again"
            await asyncio.sleep(0.05)
        assert redis_cli(port, "LLEN", inbox) == "51"
    finally:
        await worker.close()


async def test_chunks_within_the_window_leave_as_one_event() -> None:
    broker = create_broker("memory://")
    stream = TurnStream(broker, "s", "t", ChunkFlusher(0.05))
    for token in ["to", "ken", "s ", "fast"]:
        stream.sink(token)
    await stream.finish("done", b"{}")
    events = await collect(broker, "s", "t", 0)
    assert [e.kind for e in events] == ["chunk", "done"]
    assert msgspec.json.decode(events[0].data) == {"text": "tokens fast"}


async def test_one_window_flushes_every_stream_that_wrote_in_it() -> None:
    broker = create_broker("memory://")
    flusher = ChunkFlusher(1.0)  # the window: wide, so a stalled loop still writes inside it
    published: dict[str, float] = {}
    readers = []

    def stamp(sid: str) -> Callable[[StreamEvent], None]:
        def emit(event: StreamEvent) -> None:
            published.setdefault(sid, time.monotonic())

        return emit

    for i in range(3):
        broker.start(f"s{i}", "t")
        emit = stamp(f"s{i}")
        readers.append(asyncio.ensure_future(forward(broker.read(f"s{i}", "t", 0, 5.0), emit)))
    first = time.monotonic()
    for i in range(3):  # the streams write 0.1 s apart, all within the first one's window
        TurnStream(broker, f"s{i}", "t", flusher, claim=False).sink("token")
        if i < 2:
            await asyncio.sleep(0.1)
    await until(lambda: len(published) == 3, "the window to end")
    times = sorted(published.values())
    assert times[0] - first >= 0.95  # held for the window
    assert times[-1] - times[0] < 0.1  # and let go together, by one timer
    for reader in readers:
        reader.cancel()


async def test_each_flush_pass_is_timed_with_the_streams_it_published() -> None:
    broker = create_broker("memory://")
    metrics = Metrics()
    flusher = ChunkFlusher(0.0, metrics.chunk_flush)  # a pass per turn of the loop
    streams = [TurnStream(broker, f"s{i}", "t", flusher) for i in range(3)]
    for stream in streams:
        stream.sink("token")
    await until(lambda: metrics.chunk_flushes.count == 1, "the pass")
    assert metrics.chunk_flush_streams == 3 and metrics.chunk_flushes.sum > 0
    streams[0].sink("more")
    await until(lambda: metrics.chunk_flushes.count == 2, "the second pass")
    assert metrics.chunk_flush_streams == 4
    text = metrics.render().decode()
    assert "agenthost_chunk_flush_seconds_count 2" in text
    assert "agenthost_chunk_flush_streams_total 4" in text
    assert "agenthost_chunk_window_seconds_count 2" in text


async def test_a_window_is_timed_from_its_first_text_to_the_end_of_its_pass() -> None:
    broker = create_broker("memory://")
    passes: list[tuple[float, int, float]] = []
    flusher = ChunkFlusher(0.05, lambda *seen: passes.append(seen))
    first, second = TurnStream(broker, "a", "t", flusher), TurnStream(broker, "b", "t", flusher)
    opened = time.perf_counter()
    first.sink("token")
    await asyncio.sleep(0.02)  # the second joins the window the first opened
    second.sink("token")
    await until(lambda: bool(passes), "the window to end")
    ended = time.perf_counter()
    ((seconds, streams, window),) = passes
    assert streams == 2 and 0 < seconds <= window
    # The window, counted from the first text (a loop that reads its clock once per pass
    # may start the timer from a moment before that text: a few ms of slack).
    assert 0.045 <= window <= ended - opened


def parse_sse(text: str) -> list[tuple[int, str, dict[str, Any]]]:
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.strip().splitlines() if ": " in line)
        if "event" in fields:
            events.append((int(fields["id"]), fields["event"], msgspec.json.decode(fields["data"])))
    return events


async def test_a_client_that_lost_its_stream_resumes_on_another_process(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str, tmp_path: Path
) -> None:
    llm = "sim://?ttft_ms=50&tokens_per_s=40&words=30"
    a = agenthost_factory(store=redis_url, llm=llm, chunk_coalesce_ms=0)
    b = agenthost_factory(store=redis_url, llm=llm, chunk_coalesce_ms=0)
    async with aiohttp.ClientSession() as http:
        received: list[tuple[int, str, dict[str, Any]]] = []
        async with http.post(
            f"{a.url}/v1/sessions/res/turns",
            json={"message": "tell me a long story", "stream": True},
            headers={"Idempotency-Key": "res-1"},
        ) as resp:
            buffer = ""
            async for raw in resp.content:
                buffer += raw.decode()
                if buffer.endswith("\n\n"):
                    received += parse_sse(buffer)
                    buffer = ""
                if len(received) >= 5:
                    break  # the connection drops mid-answer
        assert all(kind == "chunk" for _, kind, _ in received)
        last_id = received[-1][0]
        async with http.get(
            f"{b.url}/v1/sessions/res/turns/res-1/stream", headers={"Last-Event-ID": str(last_id)}
        ) as resp:
            assert resp.status == 200
            rest = parse_sse(await resp.text())
        events = received + rest
        assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))
        assert events[-1][1] == "done"
        text = "".join(data["text"] for _, kind, data in events if kind == "chunk")
        async with http.get(f"{b.url}/v1/sessions/res/turns/res-1") as resp:
            committed = (await resp.json())["response"]
        assert text == committed == events[-1][2]["response"]
        # A finished turn still answers a late resume, from the broker or its record.
        async with http.get(
            f"{b.url}/v1/sessions/res/turns/res-1/stream", headers={"Last-Event-ID": "1"}
        ) as resp:
            late = parse_sse(await resp.text())
        assert late[-1][1] == "done" and late[0][0] == 2
        async with http.get(f"{b.url}/v1/sessions/res/turns/nope/stream") as resp:
            assert resp.status == 404


async def test_a_redis_broker_writes_chunks_without_a_task_and_another_broker_reads_them(
    redis_url: str,
) -> None:
    writer, reader = create_broker(redis_url), create_broker(redis_url)
    await writer.open()
    await reader.open()
    try:
        sid, tid = f"s-{uuid.uuid4().hex[:8]}", "t1"
        writer.start(sid, tid)
        await writer.publish(sid, tid, chunk(1))  # connects the pipelining client
        local: list[int] = []
        here = asyncio.ensure_future(forward(writer.read(sid, tid, 0, 5.0), record(local)))
        await until(lambda: local == [1], "the local reader")
        for seq in (2, 3):
            assert writer.publish_nowait(sid, tid, chunk(seq))
            assert local[-1] == seq  # readers on this process have it at once
        assert writer.publish_nowait(sid, tid, StreamEvent(4, "done", b"{}"))
        await asyncio.wait_for(here, 5)
        remote = await collect(reader, sid, tid, 0)  # from Redis, on "another process"
        assert [(e.seq, e.kind) for e in remote] == [(1, "chunk"), (2, "chunk"), (3, "chunk"),
                                                     (4, "done")]  # fmt: skip
        assert remote[2].data == chunk(3).data
    finally:
        await writer.close()
        await reader.close()


@given(text=st.text(max_size=200))
def test_a_chunks_data_is_its_text_encoded_as_json(text: str) -> None:
    assert chunk_data(text) == msgspec.json.encode({"text": text})
    assert msgspec.json.decode(chunk_data(text)) == {"text": text}


@given(
    session_id=st.text(min_size=1, max_size=40),
    turn_id=st.text(min_size=1, max_size=40),
    seq=st.integers(min_value=2, max_value=2**62),
    data=st.binary(max_size=300),
)
def test_a_chunks_prepacked_xadd_is_the_packed_command(
    session_id: str, turn_id: str, seq: int, data: bytes
) -> None:
    event = StreamEvent(seq, "chunk", data)
    (xadd,) = _commands(session_id, turn_id, event, 300.0)
    packed = _xadd_chunk(_xadd_head(session_id, turn_id), event)
    assert packed == hiredis.pack_command(xadd)


async def test_a_redis_broker_packs_a_streams_key_once_not_per_chunk(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk's XADD reuses its stream's packed head (key and fixed words): at thousands of
    streams this formatting ran for every chunk of every stream."""
    heads: list[tuple[str, str]] = []
    make_head = redis_broker._xadd_head

    def counted(session_id: str, turn_id: str) -> bytes:
        heads.append((session_id, turn_id))
        return make_head(session_id, turn_id)

    monkeypatch.setattr(redis_broker, "_xadd_head", counted)
    writer, reader = create_broker(redis_url), create_broker(redis_url)
    await writer.open()
    await reader.open()
    try:
        sid = f"s-{uuid.uuid4().hex[:8]}"
        for tid in ("t1", "t2"):
            writer.start(sid, tid)
            await writer.publish(sid, tid, chunk(1))  # connects the pipelining client
            for seq in range(2, 12):
                assert writer.publish_nowait(sid, tid, chunk(seq))
            assert writer.publish_nowait(sid, tid, StreamEvent(12, "done", b"{}"))
        assert heads == [(sid, "t1"), (sid, "t2")]
        for tid in ("t1", "t2"):  # and every chunk is in Redis, in order
            remote = await collect(reader, sid, tid, 0)
            assert [e.seq for e in remote] == list(range(1, 13))
            assert remote[5].data == chunk(6).data
    finally:
        await writer.close()
        await reader.close()


@given(seq=st.integers(min_value=1, max_value=2**62), data=st.binary(max_size=300))
def test_an_sse_frame_has_its_id_event_and_data_lines(seq: int, data: bytes) -> None:
    for kind in get_args(EventKind):
        frame = native_frame(StreamEvent(seq, kind, data))
        assert frame == f"id: {seq}\nevent: {kind}\ndata: ".encode() + data + b"\n\n"


async def test_a_redis_outage_while_streaming_is_logged_once_and_local_readers_go_on(
    durable_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    broker = create_broker(durable_redis.url)
    await broker.open()
    try:
        sid, tid = f"s-{uuid.uuid4().hex[:8]}", "t1"
        broker.start(sid, tid)
        await broker.publish(sid, tid, chunk(1))
        local: list[int] = []
        here = asyncio.ensure_future(forward(broker.read(sid, tid, 0, 5.0), record(local)))
        await until(lambda: local == [1], "the local reader")
        durable_redis.stop()
        seq = 2
        while broker.publish_nowait(sid, tid, chunk(seq)):  # until the loss is noticed
            assert local[-1] == seq
            seq += 1
            await asyncio.sleep(0.01)
            assert seq < 1000, "the broker never noticed Redis was gone"
        await until(lambda: "stream events not written" in caplog.text, "the warning")
        with pytest.raises(StoreUnavailable):  # the fallback path says so to its caller
            await broker.publish(sid, tid, chunk(seq))
        assert local[-1] == seq  # and local readers still got that one
        assert caplog.text.count("stream events not written") == 1
        here.cancel()
    finally:
        await broker.close()
