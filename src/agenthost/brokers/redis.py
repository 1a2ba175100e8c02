"""`redis://`: each turn's events in a Redis Stream `ah:{sid}:stream:<turn_id>` (entry id
`0-<seq>`, capped length, TTL), so a client that lost its connection resumes on any process.
A stream's first event also adds its turn id to the session's set `ah:{sid}:streams`, so
deleting the session deletes its streams without scanning the keyspace.

Readers on the process that runs the turn are served from memory; others `XREAD BLOCK` from
Redis. The stream key shares the session's hash tag, so it lives on the session's slot.

A reader elsewhere waits as long as the turn may run (`wait`: no event for that long means
its process died), however long the model pauses: each `XREAD BLOCK` asks for at most
`block_s` (twice the reply timeout: the URL's `socket_timeout`, else 2 s) on a connection
whose own timeout is longer than that, then asks again. A read timeout therefore means a
Redis that does not answer, never a quiet turn.

Turn endings (`notify_end`, see `brokers.endings`) go to a list per process,
`ah:ends:<id>` (`RPUSH`, with a TTL so a dead process's inbox goes: set with an inbox's first
ending, then at most once a second per inbox however many endings go to it, and always within
a second of the last one; measured, an `EXPIRE` per ending was one of the worker's Redis
commands per plain turn of the api / worker split); while anyone here waits
for one, one task takes every ending there at once (`BLMPOP ... COUNT`) on a connection of
its own.

On a single server, events are written through the pipelining client (`RedisWire`): the
XADDs of every stream flushed in one pass of the event loop leave in one socket write, and an
event costs no task (`publish_nowait`). A failed write is logged (once per outage): local
readers have the event anyway, and a client resuming elsewhere falls back to the turn record
for what it cannot read. On a Cluster, each event is written by redis-py's cluster client.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import redis.exceptions as rexc

from agenthost.brokers.base import StreamEvent
from agenthost.brokers.endings import Ending, decode_ending, encode_ending
from agenthost.brokers.memory import MemoryBroker
from agenthost.connections.redis import DEFAULT_SOCKET_TIMEOUT, RedisSettings, close_clients
from agenthost.connections.redis_commands import Command
from agenthost.connections.redis_wire import RedisWire, ReplyError
from agenthost.core.errors import StoreUnavailable
from agenthost.observability.logs import in_turn_context

__all__ = ["RedisBroker"]

_FAILURES = (rexc.ConnectionError, rexc.TimeoutError, rexc.ClusterDownError, OSError)
MAX_EVENTS = 100_000  # a stream longer than this keeps its newest events
RUNNING_TTL_S = 3600  # a turn whose process died leaves no stream behind for longer
INBOX_TTL_S = 600  # a dead process's inbox of turn endings goes after this
INBOX_EXPIRE_EVERY_S = 1.0  # an inbox's TTL is set again at most this often
ENDINGS_PER_READ = 1000
# What a reply to a write is when the write failed (a tuple: isinstance checks it faster than
# a union, and it runs for the reply to every chunk).
_NOT_WRITTEN = (ReplyError, StoreUnavailable)

log = logging.getLogger("agenthost.streams")


_STREAM_DELETED = msgspec.json.encode(
    {"code": "interrupted", "message": "the turn's stream was deleted with its session"}
)
"""The end a reader gives a stream deleted before it read its final event."""


def _key(session_id: str, turn_id: str) -> str:
    return f"ah:{{{session_id}}}:stream:{turn_id}"


def _index(session_id: str) -> str:
    """The set of the session's stream turn ids, so deleting a session finds its streams
    (on its slot, like them) without scanning the keyspace."""
    return f"ah:{{{session_id}}}:streams"


def _commands(
    session_id: str, turn_id: str, event: StreamEvent, stream_ttl: float
) -> list[tuple[Any, ...]]:
    """XADD of `event` (entry id `0-<seq>`, length capped), and on a stream's first or last
    event the EXPIRE that bounds how long it stays."""
    key = _key(session_id, turn_id)
    xadd = ("XADD", key, "MAXLEN", "~", MAX_EVENTS, b"0-%d" % event.seq, "k", event.kind,
            "d", event.data)  # fmt: skip
    if event.seq == 1:
        index = _index(session_id)
        ttl = max(RUNNING_TTL_S, int(stream_ttl))  # outlives every stream it lists
        # A stream whose first event ends it (a queued plain turn's, an error) is kept as
        # any ended stream is, not as a running one (an hour).
        own = int(stream_ttl) if event.final else RUNNING_TTL_S
        return [xadd, ("EXPIRE", key, own), ("SADD", index, turn_id),
                ("EXPIRE", index, ttl)]  # fmt: skip
    if event.kind != "chunk":
        ttl = int(stream_ttl) if event.final else RUNNING_TTL_S
        return [xadd, ("EXPIRE", key, ttl)]
    return [xadd]


# The fixed words of a chunk's XADD in the Redis protocol (RESP), around its key and fields.
_XADD_HEAD = b"*10\r\n$4\r\nXADD\r\n"
_XADD_CAP = b"$6\r\nMAXLEN\r\n$1\r\n~\r\n$%d\r\n%d\r\n" % (len(str(MAX_EVENTS)), MAX_EVENTS)
_XADD_CHUNK = b"%s$%d\r\n%s\r\n$1\r\nk\r\n$5\r\nchunk\r\n$1\r\nd\r\n$%d\r\n%s\r\n"


def _xadd_head(session_id: str, turn_id: str) -> bytes:
    """The start of every XADD of a chunk of the stream, up to its entry id: the fixed words
    and the stream's key, in the Redis protocol (made once per stream, see `_ChunkWrites`)."""
    key = _key(session_id, turn_id).encode()
    return b"%s$%d\r\n%s\r\n%s" % (_XADD_HEAD, len(key), key, _XADD_CAP)


def _xadd_chunk(head: bytes, event: StreamEvent) -> bytes:
    """The XADD of `_commands` for a `chunk` event, from its `head` (`_xadd_head`) on: one
    bytes format, about half the cost of building the command's tuple and packing it
    (measured: 1.8 against 3.6 us), and it runs for every chunk of every stream."""
    seq = b"0-%d" % event.seq
    data = event.data
    return _XADD_CHUNK % (head, len(seq), seq, len(data), data)


class _ChunkWrites:
    """What the broker keeps for writing one stream's chunks to Redis, so a chunk costs the
    format of its entry id and data and nothing else: the stream key's part of the command,
    and the reply callback with the ids of the turn (the reply comes back in the context of
    the connection's first request, not the turn's)."""

    __slots__ = ("head", "written")

    def __init__(self, head: bytes, written: Callable[[Any], None]) -> None:
        self.head = head
        self.written = written


def _event(entry_id: bytes | str, fields: dict[bytes, bytes]) -> StreamEvent:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    kind: Any = fields[b"k"].decode()
    return StreamEvent(int(raw.split("-", 1)[1]), kind, fields[b"d"])


# Delete the session's ended streams (their last event is `done` or `error`, or they are
# empty) and drop them from its index; the index goes once no running stream is left in it.
_FORGET_ENDED = """
local running = 0
for _, turn in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. turn
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
  local kind = last and last[2][2]
  if kind and kind ~= 'done' and kind ~= 'error' then
    running = running + 1
  else
    redis.call('DEL', key)
    redis.call('SREM', KEYS[1], turn)
  end
end
if running == 0 then redis.call('DEL', KEYS[1]) end
return running
"""


class RedisBroker(MemoryBroker):
    def __init__(self, url: str, *, stream_ttl: float = 300.0) -> None:
        super().__init__(stream_ttl=stream_ttl)
        self.url = url
        self.settings = RedisSettings.from_url(url)
        self.cluster = self.settings.cluster
        # How long a reply may take; the URL's pool size is not applied (it sizes the
        # store's pool when the broker shares the store's URL).
        self.reply_timeout = self.settings.socket_timeout or DEFAULT_SOCKET_TIMEOUT
        self.block_s = 2 * self.reply_timeout
        self._client: Any = None
        self._blocking: Any = None
        self._wire: RedisWire | None = None
        self._failing = False
        self.inbox = f"ah:ends:{uuid.uuid4().hex}"
        # The inbox's reader: its own connection, as its reads block.
        self._inbox_wire: RedisWire | None = None
        self._inbox_reader: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        # Inboxes whose TTL was set in the current second, and those sent an ending since
        # (their TTL is set again when the second ends).
        self._inbox_expired: set[str] = set()
        self._inbox_due: set[str] = set()
        self._inbox_timer: asyncio.TimerHandle | None = None

    async def open(self) -> None:
        self._client = self.settings.pooled_client(
            max_connections=10_000,
            connect_timeout=1.0,
            pool_timeout=2.0,
            socket_timeout=self.reply_timeout,
        )
        # XREAD BLOCK's own: a reply may come up to `block_s` after the command.
        self._blocking = self.settings.pooled_client(
            max_connections=10_000,
            connect_timeout=1.0,
            pool_timeout=2.0,
            socket_timeout=self.block_s + self.reply_timeout,
        )
        if not self.cluster:
            # XREAD BLOCK would hold up a pipelined connection: reads stay on redis-py.
            # Shared with the store and the queue (`RedisSettings.wire`).
            self._wire = self.settings.wire(timeout=self.reply_timeout, shared=True)
            self._inbox_wire = self.settings.wire(
                timeout=self.block_s + self.reply_timeout, connect_timeout=1.0
            )

    async def close(self) -> None:
        if self._inbox_timer is not None:
            self._inbox_timer.cancel()
            self._inbox_timer = None
        due, self._inbox_due = self._inbox_due, set()
        for inbox in due:  # the inboxes sent an ending in this last second keep their TTL
            with contextlib.suppress(StoreUnavailable, RuntimeError):
                if self._wire is not None:
                    await self._wire.call("EXPIRE", inbox, INBOX_TTL_S)
        reader, self._inbox_reader = self._inbox_reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        await super().close()
        await close_clients(self._inbox_wire, None)
        self._inbox_wire = None
        await close_clients(self._wire, self._client)
        await close_clients(None, self._blocking)
        self._wire = self._client = self._blocking = None

    async def exists(self, session_id: str, turn_id: str) -> bool:
        if self.local(session_id, turn_id):
            return True
        try:
            return bool(await self._client.exists(_key(session_id, turn_id)))
        except _FAILURES as exc:
            raise StoreUnavailable(f"redis broker: {exc}") from None

    async def _exists(self, key: str) -> bool:
        try:
            return bool(await self._client.exists(key))
        except _FAILURES as exc:
            raise StoreUnavailable(f"redis broker: {exc}") from None

    async def last(self, session_id: str, turn_id: str) -> StreamEvent | None:
        local = self.last_local(session_id, turn_id)
        if local is not None:
            return local
        try:
            reply = await self._client.xrevrange(_key(session_id, turn_id), count=1)
        except _FAILURES as exc:
            raise StoreUnavailable(f"redis broker: {exc}") from None
        return _event(*reply[0]) if reply else None

    def publish_nowait(self, session_id: str, turn_id: str, event: StreamEvent) -> bool:
        wire = self._wire
        if wire is None or not wire.connected:
            return False  # `publish` connects, or writes through the cluster client
        stream = self.publish_local(session_id, turn_id, event)
        if event.kind == "chunk" and event.seq != 1:  # a chunk within the stream: XADD alone
            writes: _ChunkWrites | None = stream.remote
            if writes is None:
                writes = stream.remote = _ChunkWrites(
                    _xadd_head(session_id, turn_id),
                    functools.partial(self._written, session_id, turn_id),
                )
            wire.call_packed_nowait(_xadd_chunk(writes.head, event), on_reply=writes.written)
            return True
        written = functools.partial(self._written, session_id, turn_id)
        for command in _commands(session_id, turn_id, event, self.stream_ttl):
            wire.call_nowait(*command, on_reply=written)
        return True

    def _written(self, session_id: str, turn_id: str, reply: Any) -> None:
        if isinstance(reply, _NOT_WRITTEN):
            if not self._failing:
                self._failing = True  # one warning per outage, not one per chunk
                in_turn_context(
                    session_id,
                    turn_id,
                    log.warning,
                    "redis broker: stream events not written (%s); readers here have them",
                    reply,
                )
        elif self._failing:
            self._failing = False

    async def publish(self, session_id: str, turn_id: str, event: StreamEvent) -> None:
        self.publish_local(session_id, turn_id, event)
        commands = _commands(session_id, turn_id, event, self.stream_ttl)
        try:
            if self._wire is not None:
                for command in commands:
                    await self._wire.call(*command)
                return
            async with self._client.pipeline(transaction=False) as pipe:
                for command in commands:
                    pipe.execute_command(*command)
                await pipe.execute()
        except _FAILURES as exc:
            # Local readers still get the event; only a resume elsewhere would miss it.
            raise StoreUnavailable(f"redis broker: {exc}") from None
        except RuntimeError as exc:  # an error reply through the pipelining client
            raise StoreUnavailable(f"redis broker: {exc}") from None

    # -- turn endings ----------------------------------------------------------------------

    def expect_end(self, session_id: str, turn_id: str) -> asyncio.Future[StreamEvent]:
        future = self.endings.expect(session_id, turn_id)
        if self._inbox_reader is None or self._inbox_reader.done():
            self._inbox_reader = asyncio.ensure_future(self._read_inbox())
        return future

    def notify_end(self, inbox: str, session_id: str, turn_id: str, event: StreamEvent) -> None:
        if inbox == self.inbox:
            self.endings.deliver(Ending(session_id, turn_id, event))  # no round trip
            return
        payload = encode_ending(Ending(session_id, turn_id, event))
        wire = self._wire
        if wire is not None and wire.connected:
            sent = functools.partial(self._ending_sent, session_id, turn_id)
            wire.call_nowait("RPUSH", inbox, payload, on_reply=sent)
            if self._expires_now(inbox):
                wire.call_nowait("EXPIRE", inbox, INBOX_TTL_S, on_reply=sent)
            return
        task = asyncio.ensure_future(self._send_ending(inbox, session_id, turn_id, payload))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def ending_commands(
        self, inbox: str, session_id: str, turn_id: str, event: StreamEvent
    ) -> tuple[object, list[Command]] | None:
        wire = self._wire
        if wire is None or inbox == self.inbox:
            return None  # a Cluster (another node than the session's), or delivered here
        commands: list[Command] = [
            ("RPUSH", inbox, encode_ending(Ending(session_id, turn_id, event)))
        ]
        if self._expires_now(inbox):
            commands.append(("EXPIRE", inbox, INBOX_TTL_S))
        return wire, commands

    def _expires_now(self, inbox: str) -> bool:
        """Whether an ending sent to `inbox` now sets its TTL: its first in this second; the
        later ones mark it due, and the TTL is set again as the second ends."""
        if inbox in self._inbox_expired:
            self._inbox_due.add(inbox)
            return False
        self._inbox_expired.add(inbox)
        if self._inbox_timer is None:
            self._inbox_timer = asyncio.get_running_loop().call_later(
                INBOX_EXPIRE_EVERY_S, self._next_inbox_second
            )
        return True

    def _next_inbox_second(self) -> None:
        """A second ended: the inboxes sent an ending during it get their TTL set again (and
        count as set in the next second); with none, the timer stops until the next ending."""
        self._inbox_timer = None
        self._inbox_expired = self._expire_due_inboxes()
        if self._inbox_expired:
            self._inbox_timer = asyncio.get_running_loop().call_later(
                INBOX_EXPIRE_EVERY_S, self._next_inbox_second
            )

    def _expire_due_inboxes(self) -> set[str]:
        """Set the TTL of every inbox sent an ending since its TTL was last set; those set."""
        due, self._inbox_due = self._inbox_due, set()
        wire = self._wire
        for inbox in due:
            # Not connected: the list may have no TTL until an ending sent later sets it
            # (as when the EXPIRE after an RPUSH is lost with its connection).
            if wire is not None:
                wire.call_nowait("EXPIRE", inbox, INBOX_TTL_S)
        return due

    async def _send_ending(self, inbox: str, session_id: str, turn_id: str, payload: bytes) -> None:
        """`notify_end` through a call that connects, or through the cluster client."""
        try:
            if self._wire is not None:
                await self._wire.call("RPUSH", inbox, payload)
                await self._wire.call("EXPIRE", inbox, INBOX_TTL_S)
                return
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.rpush(inbox, payload)
                pipe.expire(inbox, INBOX_TTL_S)
                await pipe.execute()
        except (*_FAILURES, StoreUnavailable, RuntimeError) as exc:
            self._ending_sent(session_id, turn_id, StoreUnavailable(f"redis broker: {exc}"))

    def _ending_sent(self, session_id: str, turn_id: str, reply: Any) -> None:
        if isinstance(reply, _NOT_WRITTEN):
            in_turn_context(
                session_id,
                turn_id,
                log.warning,
                "redis broker: the end of turn %s not sent to its api process (%s); "
                "it reads the turn record",
                turn_id,
                reply,
            )

    async def _read_inbox(self) -> None:
        """Take every ending in this process's inbox at once, while anyone here waits."""
        failing = False
        while len(self.endings):
            try:
                popped = await self._pop_endings()
            except (*_FAILURES, StoreUnavailable, RuntimeError) as exc:
                if not failing:
                    log.warning("redis broker: cannot read turn endings (%s); retrying", exc)
                failing = True
                await asyncio.sleep(0.5)  # the waiters look at their turn records meanwhile
                continue
            failing = False
            for raw in popped:
                try:
                    self.endings.deliver(decode_ending(raw))
                except msgspec.DecodeError:
                    log.warning("redis broker: a malformed turn ending in %s", self.inbox)

    async def _pop_endings(self) -> list[bytes]:
        block = self.block_s
        if self._inbox_wire is not None:
            reply = await self._inbox_wire.call(
                "BLMPOP", block, 1, self.inbox, "LEFT", "COUNT", ENDINGS_PER_READ
            )
        else:
            reply = await self._blocking.blmpop(
                block, 1, self.inbox, direction="LEFT", count=ENDINGS_PER_READ
            )
        return list(reply[1]) if reply else []

    # -- deletes ----------------------------------------------------------------------------

    async def forget(self, session_id: str, turn_id: str | None = None) -> None:
        self.forget_local(session_id, turn_id)
        index = _index(session_id)
        try:
            if turn_id is not None:
                async with self._client.pipeline(transaction=False) as pipe:
                    pipe.delete(_key(session_id, turn_id))
                    pipe.srem(index, turn_id)
                    await pipe.execute()
                return
            # One slot (the session's hash tag), one script: a running stream stays for its
            # publisher, whose error ends it for its readers (as in the memory broker).
            await self._client.eval(_FORGET_ENDED, 1, index, _key(session_id, ""))
        except _FAILURES as exc:
            raise StoreUnavailable(f"redis broker: {exc}") from None

    def read(
        self, session_id: str, turn_id: str, after: int, wait: float
    ) -> AsyncIterator[StreamEvent]:
        if self.local(session_id, turn_id):
            return super().read(session_id, turn_id, after, wait)  # pushed from memory
        return self._read_redis(session_id, turn_id, after, wait)

    async def _read_redis(
        self, session_id: str, turn_id: str, after: int, wait: float
    ) -> AsyncIterator[StreamEvent]:
        key = _key(session_id, turn_id)
        last = f"0-{after}"
        loop = asyncio.get_running_loop()
        quiet_until = loop.time() + wait
        while True:
            block = min(self.block_s, quiet_until - loop.time())
            if block <= 0:
                return  # nothing for `wait` seconds: the publisher died, or no such stream
            try:
                reply = await self._blocking.xread(
                    {key: last}, count=500, block=max(1, int(block * 1000))
                )
            except _FAILURES as exc:
                raise StoreUnavailable(f"redis broker: {exc}") from None
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # Cancelled while redis-py waited (the reader's client left): redis-py may
                # swallow the cancellation mid-read, so it is honoured here.
                raise asyncio.CancelledError
            if not reply:
                if last != "0-0" and not await self._exists(key):
                    # Deleted with its session, after an end this reader may not have read
                    # (its publisher deletes it right after its error): it ends with one.
                    yield StreamEvent(int(last[2:]) + 1, "error", _STREAM_DELETED)
                    return
                continue  # a quiet turn (the model thinks): ask again
            quiet_until = loop.time() + wait
            for _, entries in reply:
                for entry_id, fields in entries:
                    event = _event(entry_id, fields)
                    last = f"0-{event.seq}"
                    yield event
                    if event.final:
                        return
