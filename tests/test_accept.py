"""The batch acceptor: every waiting connection is taken in one readiness callback and
served; closing it stops accepting. In a group, each process takes its share of a burst, and
a sibling that accepts nothing delays new connections but never stops them."""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from pathlib import Path

import pytest

from agenthost.runtime.accept import BatchAcceptor
from agenthost.runtime.connection_shares import FLOOR, SLACK, ConnectionShares


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert isinstance(self.transport, asyncio.WriteTransport)
        self.transport.write(data)


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


async def test_a_burst_of_connections_is_accepted_and_served() -> None:
    sock = listening_socket()
    port = sock.getsockname()[1]
    acceptor = BatchAcceptor(asyncio.get_running_loop(), sock, Echo)

    async def talk(i: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello %d\n" % i)
        line = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        return line

    answers = await asyncio.gather(*(talk(i) for i in range(600)))
    assert answers == [b"hello %d\n" % i for i in range(600)]
    assert acceptor.sockets == [sock]
    acceptor.close()
    await acceptor.wait_closed()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


class Counted(Echo):
    """Echo, counting the connections of one acceptor."""

    def __init__(self, held: list[int]) -> None:
        self.held = held

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.held[0] += 1


async def hold_connections(port: int, count: int) -> list[asyncio.StreamWriter]:
    """`count` connections, each answered once (so each is accepted and set up)."""

    async def one(i: int) -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"%d\n" % i)
        assert await asyncio.wait_for(reader.readline(), 10) == b"%d\n" % i
        return writer

    return list(await asyncio.gather(*(one(i) for i in range(count))))


def two_processes(sock: socket.socket, table: str) -> tuple[list[list[int]], list[BatchAcceptor]]:
    """Two acceptors on one listening socket (as two processes of a group have it, each
    through its own descriptor), each with its slot in the group's table."""
    loop = asyncio.get_running_loop()
    ConnectionShares.create(table, 2)
    held = [[0], [0]]
    acceptors = []
    for index in range(2):
        own = socket.socket(fileno=os.dup(sock.fileno()))
        counter = held[index]
        shares = ConnectionShares(table, index, 2, functools.partial(counter.__getitem__, 0))
        acceptors.append(BatchAcceptor(loop, own, functools.partial(Counted, counter), shares))
    return held, acceptors


async def test_processes_of_a_group_take_even_shares_of_a_burst(tmp_path: Path) -> None:
    sock = listening_socket()
    held, acceptors = two_processes(sock, str(tmp_path / "connections"))
    # The first acceptor's callback runs first at every wake-up: alone, it takes them all.
    writers = await hold_connections(sock.getsockname()[1], 400)
    assert held[0][0] + held[1][0] == 400
    assert abs(held[0][0] - held[1][0]) <= SLACK + FLOOR, held
    for writer in writers:
        writer.close()
    for acceptor in acceptors:
        acceptor.close()
    sock.close()


async def test_a_sibling_that_accepts_nothing_delays_connections_but_never_stops_them(
    tmp_path: Path,
) -> None:
    sock = listening_socket()
    held, acceptors = two_processes(sock, str(tmp_path / "connections"))
    # The second process's loop is stuck: its slot says 0 connections, and it takes none.
    asyncio.get_running_loop().remove_reader(acceptors[1].sock.fileno())
    writers = await hold_connections(sock.getsockname()[1], 200)
    assert held == [[200], [0]]
    for writer in writers:
        writer.close()
    for acceptor in acceptors:
        acceptor.close()
    sock.close()


async def test_without_siblings_a_process_accepts_everything(tmp_path: Path) -> None:
    sock = listening_socket()
    table = str(tmp_path / "connections")
    ConnectionShares.create(table, 2)  # slot 1 empty: its process has exited
    held = [0]
    shares = ConnectionShares(table, 0, 2, lambda: held[0])
    acceptor = BatchAcceptor(asyncio.get_running_loop(), sock, lambda: Counted(held), shares)
    writers = await hold_connections(sock.getsockname()[1], 100)
    assert held == [100]
    for writer in writers:
        writer.close()
    acceptor.close()
