"""core/write_batch: writes held in a block are made in order as it ends; the chunk flusher
holds the SSE writes of a pass until every stream in it is published."""

from __future__ import annotations

import asyncio

import pytest

from agenthost.brokers import create_broker
from agenthost.brokers.base import StreamEvent, forward
from agenthost.core import write_batch
from agenthost.turns.chunks import ChunkFlusher, TurnStream


class Recorder:
    def __init__(self, name: str, log: list[tuple[str, str]], fail: bool = False) -> None:
        self.name = name
        self.log = log
        self.fail = fail

    def write(self, data: bytes) -> None:
        if self.fail:
            raise ConnectionResetError("gone")
        self.log.append(("write", f"{self.name}:{data.decode()}"))


def test_writes_outside_a_block_are_made_at_once() -> None:
    log: list[tuple[str, str]] = []
    write_batch.write(Recorder("a", log), b"1")
    assert log == [("write", "a:1")]


def test_writes_in_a_block_are_made_in_order_as_it_ends() -> None:
    log: list[tuple[str, str]] = []
    a, b = Recorder("a", log), Recorder("b", log)
    with write_batch.held():
        write_batch.write(a, b"1")
        write_batch.write(b, b"2")
        with write_batch.held():  # an inner block adds to the outer one's
            write_batch.write(a, b"3")
        log.append(("mark", "end of block"))
    assert log == [("mark", "end of block"), ("write", "a:1"), ("write", "b:2"),
                   ("write", "a:3")]  # fmt: skip


def test_a_transport_that_cannot_write_does_not_hold_back_the_others() -> None:
    log: list[tuple[str, str]] = []
    with write_batch.held():
        write_batch.write(Recorder("gone", log, fail=True), b"1")
        write_batch.write(Recorder("b", log), b"2")
    assert log == [("write", "b:2")]
    write_batch.write(Recorder("c", log), b"3")  # no longer holding
    assert log[-1] == ("write", "c:3")


def test_a_block_that_raises_still_makes_its_writes() -> None:
    log: list[tuple[str, str]] = []
    with pytest.raises(RuntimeError), write_batch.held():
        write_batch.write(Recorder("a", log), b"1")
        raise RuntimeError("boom")
    assert log == [("write", "a:1")]


async def test_a_flush_pass_writes_after_every_stream_in_it_is_published() -> None:
    broker = create_broker("memory://")
    flusher = ChunkFlusher(0.0)  # one pass of the loop
    log: list[tuple[str, str]] = []
    all_written = asyncio.Event()
    readers = []
    for i in range(3):
        sid = f"s{i}"
        broker.start(sid, "t")
        transport = Recorder(sid, log)

        def emit(event: StreamEvent, sid: str = sid, transport: Recorder = transport) -> None:
            log.append(("published", sid))
            write_batch.write(transport, b"%d" % event.seq)  # as the SSE direct writer does
            if sid == "s2":  # the last of the pass: its write comes when the pass ends
                asyncio.get_running_loop().call_soon(all_written.set)

        readers.append(asyncio.ensure_future(forward(broker.read(sid, "t", 0, 5.0), emit)))
    await asyncio.sleep(0)  # the readers listen
    for i in range(3):
        TurnStream(broker, f"s{i}", "t", flusher, claim=False).sink("token")
    await asyncio.wait_for(all_written.wait(), 5)
    assert log == [("published", "s0"), ("published", "s1"), ("published", "s2"),
                   ("write", "s0:1"), ("write", "s1:1"), ("write", "s2:1")]  # fmt: skip
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    await broker.close()
