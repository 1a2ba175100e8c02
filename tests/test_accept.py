"""The batch acceptor: every waiting connection is taken in one readiness callback and
served; closing it stops accepting."""

from __future__ import annotations

import asyncio
import socket

import pytest

from agenthost.runtime.accept import BatchAcceptor


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
