"""Accepting connections in batches, for a loop that is busy.

Under load (thousands of streams writing every few tens of milliseconds) uvloop's own server
accepted new connections at only 40-65 a second: with 2,000 SSE clients arriving in 2 s, a
thousand of them waited in the listening socket's queue for up to 15 s before their request
was read (`ss -ltn`, `benchmarks/stream_gaps.py`). Here one readiness callback accepts every
connection waiting, up to a batch, and hands each to the loop's transport machinery.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable

__all__ = ["BatchAcceptor"]

log = logging.getLogger("agenthost.server")

BATCH = 512  # connections accepted per readiness callback at most
_OUT_OF_FILES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_PAUSE_S = 0.1  # out of file descriptors: stop accepting this long, then try again


class BatchAcceptor:
    """A listening socket whose waiting connections are accepted in batches; the part of
    `asyncio.Server` that uvicorn uses (`sockets`, `close`, `wait_closed`)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.protocol_factory = protocol_factory
        self.sockets = [sock]
        self._connecting: set[asyncio.Task[object]] = set()
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._accept)
        self._closed = False

    def _accept(self) -> None:
        for _ in range(BATCH):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_FILES:
                    log.warning("cannot accept connections: %s; pausing %g s", exc, _PAUSE_S)
                    self.loop.remove_reader(self.sock.fileno())
                    self.loop.call_later(_PAUSE_S, self._resume)
                return  # e.g. ECONNABORTED: the client gave up; the next one is fine
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = asyncio.ensure_future(
                self.loop.connect_accepted_socket(self.protocol_factory, conn)
            )
            self._connecting.add(task)
            task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[object]) -> None:
        self._connecting.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("could not set up an accepted connection: %s", exc)

    def _resume(self) -> None:
        if not self._closed:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()

    async def wait_closed(self) -> None:
        return None
