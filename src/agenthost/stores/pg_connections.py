"""A bounded set of asyncpg connections for the PostgreSQL store, handed out one per call.

asyncpg's `Pool` costs about 0.05 ms of CPU per call on this machine (an `asyncio.shield`
task and an idle-lifetime timer per release, its proxy objects), where the call on a bare
connection costs 0.02 (`benchmarks/turn_cpu.py` counts two calls per turn). The store
needs less than the pool offers: every call is one autocommit statement that leaves no
session state, so a connection goes back as it came. Here a call takes a free connection
(or opens one, up to `size`, or waits for one), runs, and gives it back; a connection
that failed is terminated and the next call opens a new one, so service resumes by itself
when PostgreSQL is back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

__all__ = ["PgConnections"]

T = TypeVar("T")


class PgConnections:
    """Up to `size` connections to `dsn`, opened when first needed."""

    def __init__(
        self, dsn: str, *, size: int, connect_timeout: float, command_timeout: float
    ) -> None:
        self.dsn = dsn
        self.size = max(1, size)
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._free: list[asyncpg.Connection] = []
        self._opened = 0
        """Connections open or being opened."""
        self._waiters: collections.deque[asyncio.Future[asyncpg.Connection | None]] = (
            collections.deque()
        )
        self._closed = False

    async def run(self, call: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """`call` on a connection of its own; a connection that fails is dropped."""
        conn = None
        while self._free:
            idle = self._free.pop()
            if not idle.is_closed():
                conn = idle
                break
            self._drop(idle)  # closed while idle (a server restart): never handed out
        if conn is None:
            conn = await self._take()
        try:
            result = await call(conn)
        except asyncpg.PostgresError:
            self._give_back(conn)  # the server answered: the connection is fine (or closed)
            raise
        except BaseException:
            # A lost connection, a timeout mid-protocol, a cancellation: a connection in an
            # unknown state never goes back.
            self._drop(conn)
            raise
        self._give_back(conn)
        return result

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self.run(lambda conn: conn.fetchval(query, *args))

    async def fetchrow(self, query: str, *args: Any) -> Any:
        return await self.run(lambda conn: conn.fetchrow(query, *args))

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        rows: list[Any] = await self.run(lambda conn: conn.fetch(query, *args))
        return rows

    async def execute(self, query: str, *args: Any) -> str:
        status: str = await self.run(lambda conn: conn.execute(query, *args))
        return status

    async def close(self) -> None:
        self._closed = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(asyncpg.InterfaceError("the connections are closed"))
        self._waiters.clear()
        free, self._free = self._free, []
        for conn in free:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)
            self._opened -= 1

    async def _take(self) -> asyncpg.Connection:
        if self._closed:
            raise asyncpg.InterfaceError("the connections are closed")
        if self._opened < self.size:
            return await self._open()
        waiter: asyncio.Future[asyncpg.Connection | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiters.append(waiter)
        try:
            conn = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                handed = waiter.result()  # handed over as we were cancelled: pass it on
                if handed is not None:
                    self._give_back(handed)
                else:
                    self._opened -= 1
                    self._wake_one()
            raise
        # None: a connection was dropped, so there is room to open one.
        return conn if conn is not None else await self._open(reserved=True)

    async def _open(self, *, reserved: bool = False) -> asyncpg.Connection:
        if not reserved:
            self._opened += 1
        try:
            conn: asyncpg.Connection = await asyncpg.connect(
                self.dsn, timeout=self.connect_timeout, command_timeout=self.command_timeout
            )
        except BaseException:
            self._opened -= 1
            self._wake_one()
            raise
        return conn

    def _give_back(self, conn: asyncpg.Connection) -> None:
        if conn.is_closed() or self._closed:
            self._drop(conn)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._free.append(conn)

    def _drop(self, conn: asyncpg.Connection) -> None:
        conn.terminate()
        self._opened -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        """Give a waiter the room a dropped connection left (it opens its own)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._opened += 1
                waiter.set_result(None)
                return
