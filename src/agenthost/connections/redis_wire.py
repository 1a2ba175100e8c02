"""A lean pipelining RESP client for the turn hot path on a single Redis server.

Commands issued during one event-loop iteration leave in one socket write and their replies
are parsed by hiredis and matched in order, so under load many turns share each system
call on both sides. Per command it costs one future: no task, no pool lock, no per-call
timer. Timeouts are enforced by one watchdog per connection that aborts the connection
when its oldest reply is overdue; every failure surfaces as `StoreUnavailable`, and the next
call reconnects.

The parts of a process that talk to the same server with the same timeouts (session store,
stream broker, work queue, limiter) share one client (`shared_wire`, asked for with
`RedisSettings.wire(shared=True)`): what they send in the same iteration leaves in one write
and Redis reads it in one call. A slow reply fails the calls of every part on the client,
as it would anyway: Redis runs one command at a time, so the others' replies are as late.
A blocking command (`BLMPOP`) needs a client of its own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import time
import weakref
from collections.abc import Callable, Hashable
from typing import Any, cast

import hiredis

from agenthost.core.errors import StoreUnavailable

__all__ = ["RedisWire", "ReplyError", "shared_wire"]

ReplyError = hiredis.ReplyError

_TRANSIENT_PREFIXES = ("LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "OOM")


def _drop_reply(reply: Any) -> None:
    """For commands whose reply (or failure) nobody needs."""


def _pack(args: tuple[Any, ...]) -> bytes:
    packed: bytes = hiredis.pack_command(args)
    return packed


class _Connection(asyncio.Protocol):
    """One socket: buffers commands until the loop turns, then writes them together."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.reader = hiredis.Reader()
        # Who gets each reply: a future (`send`), or a callback (`send_nowait`) that costs no
        # future and no scheduled callback per command.
        self.pending: collections.deque[tuple[asyncio.Future[Any] | Callable[[Any], None], float]]
        self.pending = collections.deque()
        self.outgoing: list[bytes] = []
        self.flush_scheduled = False
        # Called as this iteration's commands leave, before they are joined: what they send
        # leaves with them (`RedisWire.before_write`).
        self.before_write: list[Callable[[], None]] = []
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.error: str = "connection closed"
        self.watchdog: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        self.watchdog = self.loop.call_later(self.timeout / 4, self._watch)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        pending = self.pending
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            if not pending:  # a reply nobody asked for: the stream is out of step
                self._fail("unexpected reply from redis")
                return
            target, _ = pending.popleft()
            if isinstance(target, asyncio.Future):
                if not target.done():
                    target.set_result(reply)
            else:
                target(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection lost: {exc}" if exc else "connection closed by redis")

    # -- use --------------------------------------------------------------------------------

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self.loop.create_future()
        if self.closed:
            future.set_exception(StoreUnavailable(f"redis: {self.error}"))
            return future
        self.pending.append((future, time.monotonic() + self.timeout))
        self.outgoing.append(packed)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)
        return future

    def send_nowait(self, packed: bytes, on_reply: Callable[[Any], None]) -> None:
        """Send a command whose reply (a value, a ReplyError, or the StoreUnavailable that
        ended the connection) is handed to `on_reply`."""
        if self.closed:
            on_reply(StoreUnavailable(f"redis: {self.error}"))
            return
        self.pending.append((on_reply, time.monotonic() + self.timeout))
        self.outgoing.append(packed)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def schedule_before_write(self, callback: Callable[[], None]) -> None:
        self.before_write.append(callback)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _run_before_write(self) -> None:
        callbacks, self.before_write = self.before_write, []
        for callback in callbacks:
            callback()

    def _flush(self) -> None:
        if self.before_write:
            self._run_before_write()  # still scheduled: their commands only join the list
        self.flush_scheduled = False
        if self.outgoing and self.transport is not None and not self.closed:
            data = b"".join(self.outgoing) if len(self.outgoing) > 1 else self.outgoing[0]
            self.outgoing.clear()
            self.transport.write(data)

    def _watch(self) -> None:
        if self.closed:
            return
        if self.pending and self.pending[0][1] < time.monotonic():
            self._fail(f"no reply within {self.timeout:g} s")
            return
        self.watchdog = self.loop.call_later(self.timeout / 4, self._watch)

    def _fail(self, why: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.error = why
        if self.watchdog is not None:
            self.watchdog.cancel()
        if self.transport is not None:
            self.transport.abort()
        # Callers waiting to send learn of the failure as they send (`send_nowait`).
        self._run_before_write()
        error = StoreUnavailable(f"redis: {why}")
        while self.pending:
            target, _ = self.pending.popleft()
            if isinstance(target, asyncio.Future):
                if not target.done():
                    target.set_exception(error)
            else:
                target(error)
        self.outgoing.clear()

    def close(self) -> None:
        self._fail("client closed")


class RedisWire:
    """Pipelined calls to one Redis server. Built by `RedisSettings.wire`
    (`agenthost.connections.redis`), which reads the server's URL: this class parses none."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 2.0,
        connect_timeout: float = 1.0,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.db = db
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        # Shared (`shared_wire`): how many parts use it, and where it is listed.
        self._users = 1
        self._listed: tuple[dict[Hashable, RedisWire], Hashable] | None = None

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done():
                self._connecting = None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        context = self.ssl_context
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, self.timeout), self.host, self.port, ssl=context
                )
                if self.password is not None:
                    auth = (self.username, self.password) if self.username else (self.password,)
                    self._check_setup(await conn.send(_pack(("AUTH", *auth))))
                if self.db:
                    self._check_setup(await conn.send(_pack(("SELECT", self.db))))
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, OSError | TimeoutError):
                raise StoreUnavailable(
                    f"redis: cannot connect to {self.host}:{self.port}: {exc}"
                ) from None
            raise
        self._conn = conn
        return conn

    @staticmethod
    def _check_setup(reply: Any) -> None:
        # A refused AUTH or SELECT (wrong password, no such db) leaves the store unusable,
        # which clients must see as a 503, like any unreachable store.
        if isinstance(reply, ReplyError):
            raise StoreUnavailable(f"redis: connection set-up refused: {reply}")

    @staticmethod
    def check(reply: Any) -> Any:
        """A reply as `call` returns it: error replies raised (transient ones as
        StoreUnavailable, any other as RuntimeError)."""
        if isinstance(reply, ReplyError):
            text = str(reply)
            if text.startswith(_TRANSIENT_PREFIXES):
                raise StoreUnavailable(f"redis: {text}")
            raise RuntimeError(f"redis error: {text}")
        return reply

    async def call(self, *args: Any) -> Any:
        """Send one command; its reply, with error replies raised."""
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connection()
        return self.check(await conn.send(_pack(args)))

    @property
    def connected(self) -> bool:
        """Whether a connection is open: `call_nowait` can send now."""
        conn = self._conn
        return conn is not None and not conn.closed

    def call_nowait(self, *args: Any, on_reply: Callable[[Any], None] = _drop_reply) -> bool:
        """Send one command and do not wait for its reply: `on_reply` is called with it (a
        value, a ReplyError, or a StoreUnavailable if the connection failed first); by
        default it is dropped, for clean-ups that may fail. False if no connection is open
        to send it on."""
        return self.call_packed_nowait(_pack(args), on_reply)

    def before_write(self, callback: Callable[[], None]) -> bool:
        """Call `callback` as the commands sent in this loop iteration leave (in one write),
        before they are joined: the commands it sends (`call_nowait`) leave with them, last.
        A caller that gathers the requests of one iteration into one command sends it so
        (the queue's acknowledgements). If the connection fails first, `callback` is called
        as it fails, and what it sends fails at once. False if no connection is open."""
        conn = self._conn
        if conn is None or conn.closed:
            return False
        conn.schedule_before_write(callback)
        return True

    def call_packed_nowait(
        self, packed: bytes, on_reply: Callable[[Any], None] = _drop_reply
    ) -> bool:
        """`call_nowait` of a command already in the Redis protocol (`packed`), for a caller
        that builds it cheaper than packing its arguments."""
        conn = self._conn
        if conn is None or conn.closed:
            return False
        conn.send_nowait(packed, on_reply)
        return True

    async def evalsha(self, sha: str, script: str, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA, loading the script on NOSCRIPT (after a restart or a SCRIPT FLUSH)."""
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connection()
        reply = await conn.send(_pack(("EVALSHA", sha, len(keys), *keys, *args)))
        if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
            await self.call("SCRIPT", "LOAD", script)
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)
        return self.check(reply)

    async def evalsha_then(
        self, sha: str, script: str, keys: list[str], args: list[Any], then: tuple[Any, ...]
    ) -> tuple[Any, Any]:
        """EVALSHA and the command `then` in the same write: Redis runs `then` right after
        the script, so it reads what the script left. The script's reply has errors raised;
        `then`'s is returned as it came (a value or a ReplyError)."""
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connection()
        first = conn.send(_pack(("EVALSHA", sha, len(keys), *keys, *args)))
        second = conn.send(_pack(then))
        try:
            reply = await first
        finally:
            after = await asyncio.gather(second, return_exceptions=True)
        if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
            await self.call("SCRIPT", "LOAD", script)
            return await self.evalsha_then(sha, script, keys, args, then)
        if isinstance(after[0], BaseException) and not isinstance(after[0], ReplyError):
            raise after[0]
        return self.check(reply), after[0]

    async def close(self) -> None:
        """Close the connection; a shared client closes when its last user closes it."""
        if self._users > 1:
            self._users -= 1
            return
        if self._listed is not None:
            wires, key = self._listed
            self._listed = None
            if wires.get(key) is self:
                del wires[key]
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
            self._connecting = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, RedisWire]]
_SHARED = weakref.WeakKeyDictionary()


def shared_wire(key: Hashable, make: Callable[[], RedisWire]) -> RedisWire:
    """The running loop's client for `key` (a server and its timeouts), made by `make` for
    its first user; each user closes it once (`RedisWire.close`), the last one for good.
    Outside a running loop every call makes a client of its own."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return make()
    wires = _SHARED.setdefault(loop, {})
    wire = wires.get(key)
    if wire is None:
        wire = wires[key] = make()
        wire._listed = (wires, key)
    else:
        wire._users += 1
    return wire
