"""Accepting connections in batches, for a loop that is busy.

Under load (thousands of streams writing every few tens of milliseconds) uvloop's own server
accepted new connections at only 40-65 a second: with 2,000 SSE clients arriving in 2 s, a
thousand of them waited in the listening socket's queue for up to 15 s before their request
was read (`ss -ltn`, `benchmarks/stream_gaps.py`). Here one readiness callback accepts every
connection waiting, up to a batch, and hands each to the loop's transport machinery.

In a `--workers` group every process accepts from the one listening socket; with
`ConnectionShares` each takes only its share of the group's connections
(`agenthost.runtime.connection_shares` says why and how).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable

from agenthost.runtime.connection_shares import FLOOR, PAUSE_S, STUCK_S, ConnectionShares

__all__ = ["BatchAcceptor"]

log = logging.getLogger("agenthost.server")

BATCH = 512  # connections accepted per readiness callback at most
_OUT_OF_FILES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_PAUSE_S = 0.1  # out of file descriptors: stop accepting this long, then try again


class BatchAcceptor:
    """A listening socket whose waiting connections are accepted in batches; the part of
    `asyncio.Server` that uvicorn uses (`sockets`, `close`, `wait_closed`). With `shares`,
    this process takes only its share of a group's connections."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
        shares: ConnectionShares | None = None,
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.protocol_factory = protocol_factory
        self.shares = shares
        self.sockets = [sock]
        self._connecting: set[asyncio.Task[object]] = set()
        self._floor = 0  # connections to accept next time whatever the shares say
        self._siblings = b""  # what the siblings had published when this one last stood back
        self._siblings_moved = 0.0  # when this one last saw that change
        self._stalled = 0  # the floor of the last pause after siblings stopped waking
        sock.setblocking(False)
        if shares is not None:
            shares.publish()
        loop.add_reader(sock.fileno(), self._accept)
        self._closed = False

    def _accept(self) -> None:
        shares = self.shares
        if shares is None:
            self._accept_up_to(BATCH)
            return
        allowed = shares.allowance(shares.publish(len(self._connecting)))
        limit = BATCH if allowed is None else min(BATCH, max(allowed, self._floor))
        self._floor = 0
        # Over this process's share with connections maybe waiting: while a sibling wakes it
        # takes them (this one is called again while any wait); else stop watching for a
        # moment rather than spin.
        took_all = self._accept_up_to(limit)
        if took_all and limit < BATCH and not self._closed and not self._siblings_woke():
            self.loop.remove_reader(self.sock.fileno())
            self.loop.call_later(PAUSE_S, self._resume_after_pause)
        shares.publish(len(self._connecting))

    def _accept_up_to(self, limit: int) -> bool:
        """Accept up to `limit` waiting connections; True if it took that many."""
        for _ in range(limit):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as exc:
                if exc.errno in _OUT_OF_FILES:
                    log.warning("cannot accept connections: %s; pausing %g s", exc, _PAUSE_S)
                    self.loop.remove_reader(self.sock.fileno())
                    self.loop.call_later(_PAUSE_S, self._resume)
                return False  # e.g. ECONNABORTED: the client gave up; the next one is fine
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = asyncio.ensure_future(
                self.loop.connect_accepted_socket(self.protocol_factory, conn)
            )
            self._connecting.add(task)
            task.add_done_callback(self._connected)
        return True

    def _connected(self, task: asyncio.Task[object]) -> None:
        self._connecting.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("could not set up an accepted connection: %s", exc)

    def _resume(self) -> None:
        if not self._closed:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def _siblings_woke(self) -> bool:
        """Whether a sibling published since this process last looked (and note it)."""
        assert self.shares is not None
        siblings = self.shares.siblings()
        if siblings == self._siblings:
            return False
        self._siblings = siblings
        self._siblings_moved = self.loop.time()
        self._stalled = 0
        return True

    def _resume_after_pause(self) -> None:
        if self._closed:
            return
        self.loop.add_reader(self.sock.fileno(), self._accept)
        if self._siblings_woke() or self.loop.time() - self._siblings_moved < STUCK_S:
            return  # called again if connections still wait
        # No sibling has woken for a while: take some of what waits now, more each pause.
        self._stalled = min(BATCH, 2 * self._stalled or FLOOR)
        self._floor = self._stalled
        self._accept()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.shares is not None:
                self.shares.leave()
                self.shares.close()
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()

    async def wait_closed(self) -> None:
        return None
