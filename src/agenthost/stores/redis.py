"""`redis://` and `redis+cluster://`: the fleet store, shared by every server process.

Every key of a session carries the hash tag `{session_id}`, so each step is one Lua script on
one slot — one round trip, atomic, Cluster-safe:

    ah:{sid}:meta    hash: created_at, updated_at, count, fence, metadata (JSON)
    ah:{sid}:msgs    list of messages (msgspec JSON); append = RPUSH, window = LRANGE tail
    ah:{sid}:turns   hash: turn_id -> turn record (JSON, with its request's fingerprint),
                     the idempotency records
    ah:{sid}:lease   string "fence:turn_id" with PX expiry (SET semantics)

Every step refreshes the TTL of every key it keeps. Commits are fenced: a process that lost
the lease cannot write. Releases are announced on the sharded channel `ah:{sid}:released`
(SPUBLISH, Redis >= 7) for `enqueue` waiters; interrupts on the fleet-wide `ah:interrupts`.
Any connection failure or timeout surfaces as `StoreUnavailable` (503 + Retry-After).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, TypeVar

import msgspec
import redis.exceptions as rexc
from redis.backoff import ConstantBackoff
from redis.retry import Retry

from agenthost.connections.redis import RedisSettings, close_clients
from agenthost.connections.redis_commands import IF_ZERO, Command
from agenthost.connections.redis_wire import RedisWire
from agenthost.core.errors import LeaseLost, SessionExists, StoreUnavailable
from agenthost.stores.base import (
    Busy,
    Completed,
    Lease,
    Message,
    SessionInfo,
    Started,
    TurnError,
    TurnRecord,
    WindowMark,
    key_reused,
    known_holds,
)
from agenthost.stores.notify import ReleaseWaiters, wait_event

__all__ = ["RedisStore"]

log = logging.getLogger("agenthost.stores.redis")

T = TypeVar("T")

INTERRUPTS = "ah:interrupts"

_encode = msgspec.json.encode
_decode_message = msgspec.json.Decoder(Message).decode
_decode_messages = msgspec.json.Decoder(list[Message]).decode
_decode_record = msgspec.json.Decoder(TurnRecord).decode
_decode_meta = msgspec.json.Decoder(dict[str, Any]).decode
_decode_interrupt = msgspec.json.Decoder(tuple[str, str]).decode

_FAILURES = (
    rexc.ConnectionError,
    rexc.TimeoutError,
    # ClusterError covers ClusterDownError / MasterDownError; RedisClusterException is what
    # the cluster client raises when no node answers (its slot map cannot be loaded).
    rexc.ClusterError,
    rexc.RedisClusterException,
    rexc.TryAgainError,
    rexc.BusyLoadingError,
    OSError,
)


def _script(name: str) -> str:
    return resources.files("agenthost.stores").joinpath("lua", f"{name}.lua").read_text()


def _keys(session_id: str) -> tuple[str, str, str, str]:
    tag = f"ah:{{{session_id}}}"
    return f"{tag}:meta", f"{tag}:msgs", f"{tag}:turns", f"{tag}:lease"


def _window(items: Any) -> list[Message]:
    """The window's messages from an LRANGE reply, decoded in one call."""
    if not items or not isinstance(items, list):
        return []  # none asked for, none stored, or the session was deleted meanwhile
    return _decode_messages(b"[" + b",".join(items) + b"]")


def _channel(session_id: str) -> str:
    return f"ah:{{{session_id}}}:released"


class RedisStore:
    """The Redis / Redis Cluster backend of `SessionStore`."""

    def __init__(
        self,
        url: str,
        *,
        max_connections: int | None = None,
        socket_timeout: float = 2.0,
        connect_timeout: float = 1.0,
    ) -> None:
        self.url = url
        self.settings = RedisSettings.from_url(url)
        self.cluster = self.settings.cluster
        # The URL's options win over the arguments. Cluster: per node, and redis-py's cluster
        # client fails (rather than waits) past it, so its default is sized for a burst of
        # turns; single server: the pub/sub pool.
        default = 1000 if self.cluster else 100
        self.max_connections = self.settings.max_connections or max_connections or default
        self.socket_timeout = self.settings.socket_timeout or socket_timeout
        self.connect_timeout = self.settings.connect_timeout or connect_timeout
        self._client: Any = None
        self._wire: RedisWire | None = None
        self._scripts: dict[str, Any] = {}
        self._sources: dict[str, tuple[str, str]] = {}
        self._waiters = ReleaseWaiters()
        self._subscribed: set[str] = set()
        self._interrupt_callbacks: list[Callable[[str, str], None]] = []
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._sub_lock = asyncio.Lock()

    # -- plumbing ---------------------------------------------------------------------------

    async def open(self) -> None:
        self._client = self.settings.pooled_client(
            max_connections=self.max_connections,
            socket_timeout=self.socket_timeout,
            connect_timeout=self.connect_timeout,
            # A burst past max_connections waits for a free connection (bounded by the
            # socket timeout) instead of failing the turn.
            pool_timeout=self.socket_timeout,
            # One quick retry covers a pooled connection that died with a restarted server.
            retry=Retry(ConstantBackoff(0.05), 1),
            health_check_interval=30,
        )
        for name in ("begin_turn", "commit_turn", "fail_turn", "lease", "session"):
            source = _script(name)
            self._scripts[name] = self._client.register_script(source)
            self._sources[name] = (hashlib.sha1(source.encode()).hexdigest(), source)
        if not self.cluster:
            # The hot path goes through the pipelining client; redis-py keeps pub/sub.
            self._wire = self.settings.wire(
                timeout=self.socket_timeout, connect_timeout=self.connect_timeout, shared=True
            )
        # Listen for interrupts before the first turn; if Redis is down now, the reader
        # subscribes once it is back (the server must start and report not-ready).
        with contextlib.suppress(StoreUnavailable):
            async with self._sub_lock:
                await self._ensure_pubsub()
        self._reader = asyncio.create_task(self._read_notifications(), name="redis-pubsub")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        self._waiters.wake_all()
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
            self._pubsub = None
        await close_clients(self._wire, self._client)
        self._wire = self._client = None

    async def _call(self, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except _FAILURES as exc:
            raise StoreUnavailable(f"redis: {exc.__class__.__name__}: {exc}") from None

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        if self._wire is not None:
            sha, source = self._sources[name]
            return await self._wire.evalsha(sha, source, keys, args)
        if self._client is None:
            raise StoreUnavailable("the redis store is not open")
        return await self._call(self._scripts[name](keys=keys, args=args))

    async def _command(self, *args: Any) -> Any:
        if self._wire is not None:
            return await self._wire.call(*args)
        if self._client is None:
            raise StoreUnavailable("the redis store is not open")
        return await self._call(self._client.execute_command(*args))

    async def ping(self) -> None:
        await self._command("PING")

    # -- sessions ---------------------------------------------------------------------------

    async def create_session(
        self, session_id: str, metadata: dict[str, Any], ttl_s: float
    ) -> SessionInfo:
        now = time.time()
        meta = _encode(metadata)
        created = await self._run(
            "session", list(_keys(session_id)), ["create", meta, repr(now), int(ttl_s * 1000)]
        )
        if not created:
            raise SessionExists("this session exists")
        return SessionInfo(session_id, now, now, 0, _decode_meta(meta))

    async def get_session(
        self, session_id: str, *, min_seq: int | None = None
    ) -> SessionInfo | None:
        meta_key = _keys(session_id)[0]
        fields = await self._command(
            "HMGET", meta_key, "created_at", "updated_at", "count", "metadata"
        )
        if fields[0] is None:
            return None
        return SessionInfo(
            session_id,
            float(fields[0]),
            float(fields[1]),
            int(fields[2]) // 2,  # each committed turn added two messages
            _decode_meta(fields[3] or b"{}"),
        )

    async def delete_session(self, session_id: str) -> bool:
        deleted = await self._run(
            "session", list(_keys(session_id)), ["delete", _channel(session_id)]
        )
        return bool(deleted)

    async def list_messages(
        self,
        session_id: str,
        limit: int,
        before: int | None = None,
        *,
        min_seq: int | None = None,
    ) -> list[Message] | None:
        raw = await self._run(
            "session",
            list(_keys(session_id)),
            ["page", limit, -1 if before is None else before],
        )
        if raw is None:
            return None
        return [_decode_message(m) for m in raw]

    # -- turns ------------------------------------------------------------------------------

    async def begin_turn(
        self,
        session_id: str,
        turn_id: str,
        message: str,
        *,
        metadata_patch: dict[str, Any] | None,
        lease_ms: int,
        window: int,
        ttl_s: float,
        fingerprint: str = "",
        known: WindowMark | None = None,
    ) -> Started | Completed | Busy:
        now = time.time()
        running = _encode(
            TurnRecord(turn_id, session_id, "running", message, now, now, fingerprint=fingerprint)
        )
        keys = list(_keys(session_id))
        args = [turn_id, running, repr(now), lease_ms, int(ttl_s * 1000), fingerprint]
        # With a mark, read what came after it (normally nothing: this process committed
        # the session's last turn); else the window.
        window_read = ("LRANGE", keys[1], known.count if known else -window, -1)
        items: Any = None
        if self._wire is not None and window > 0:
            # The read rides in the same write and runs right after the script: once the
            # script took the lease, nothing but a delete can change the list in between.
            sha, source = self._sources["begin_turn"]
            reply, items = await self._wire.evalsha_then(sha, source, keys, args, window_read)
        else:
            reply = await self._run("begin_turn", keys, args)
        kind = reply[0]
        if kind == b"started":
            _, fence, count, meta, created, created_at, *rest = reply
            count, created_at = int(count), float(created_at)
            metadata = _decode_meta(meta)
            if metadata_patch:
                metadata.update(metadata_patch)
            delta = known_holds(known, created_at, count)
            since = known.count if delta and known is not None else 0
            if window > 0 and count > since and (items is None or (known and not delta)):
                # A Cluster, or a mark of another incarnation: a second round trip.
                start = since if delta else -window
                items = await self._command("LRANGE", keys[1], start, -1)
            history = _window(items)
            if len(history) > window:
                history = history[-window:]
            return Started(
                Lease(session_id, turn_id, int(fence), fingerprint),
                history,
                metadata,
                count,
                bool(created),
                created_at,
                delta,
                rest[0] if rest else None,
            )
        if kind == b"busy":
            return Busy(reply[1].decode().split(":", 1)[1])
        if kind == b"reused":
            raise key_reused(turn_id)
        return Completed(_decode_record(reply[1]))

    def runs_after_commit(self, wire: object) -> bool:
        # One server, one client shared by its parts: the commands' keys are on it too.
        return self._wire is not None and wire is self._wire

    async def commit_turn(
        self,
        lease: Lease,
        *,
        user: Message,
        assistant: Message,
        metadata: dict[str, Any],
        ttl_s: float,
        state: bytes | None = None,
        then: Sequence[Command] = (),
    ) -> TurnRecord:
        now = time.time()
        sid, tid = lease.session_id, lease.turn_id
        record = TurnRecord(
            tid,
            sid,
            "completed",
            user.content,
            user.created_at,
            now,
            assistant.content,
            fingerprint=lease.fingerprint,
        )
        args = [
            tid,
            lease.fence,
            _encode(user),
            _encode(assistant),
            _encode(metadata),
            _encode(record),
            repr(now),
            int(ttl_s * 1000),
            _channel(sid),
            *((0,) if state is None else (1, state)),
        ]
        if then:
            if self._wire is None:
                raise ValueError("a Redis Cluster store runs no commands in a commit")
            for command in then:
                if command[0] == IF_ZERO:
                    args += (1 - len(command), *command[1:])
                else:
                    args += (len(command), *command)
        ok = await self._run("commit_turn", list(_keys(sid)), args)
        if not ok:
            raise LeaseLost(f"turn {tid} no longer holds its session's lease")
        return record

    async def fail_turn(self, lease: Lease, error: TurnError, ttl_s: float) -> TurnRecord | None:
        meta, _, turns, lease_key = _keys(lease.session_id)
        # The record's new tail, in msgspec's field order; the script splices it in.
        tail = b',"updated_at":%b,"response":null,"error":%b,"fingerprint":%b}' % (
            _encode(time.time()),
            _encode(error),
            _encode(lease.fingerprint),
        )
        raw = await self._run(
            "fail_turn",
            [meta, turns, lease_key],
            [lease.turn_id, lease.fence, tail, int(ttl_s * 1000), _channel(lease.session_id)],
        )
        return None if raw is None else _decode_record(raw)

    async def renew_lease(self, lease: Lease, lease_ms: int) -> bool:
        key = _keys(lease.session_id)[3]
        value = f"{lease.fence}:{lease.turn_id}"
        return bool(await self._run("lease", [key], [value, "renew", lease_ms, ""]))

    async def release_lease(self, lease: Lease) -> bool:
        key = _keys(lease.session_id)[3]
        value = f"{lease.fence}:{lease.turn_id}"
        channel = _channel(lease.session_id)
        return bool(await self._run("lease", [key], [value, "release", 0, channel]))

    async def running_turn(self, session_id: str) -> str | None:
        # The lease key expires with the lease, so a value is a live lease.
        holder = await self._run("session", list(_keys(session_id)), ["lease"])
        return None if not holder else bytes(holder).decode().split(":", 1)[1]

    async def unfinished_turn(self, session_id: str) -> str | None:
        # A scan of the session's turn records: a resume's question, not a turn's step.
        reply = await self._command("HGETALL", _keys(session_id)[2])
        # A flat [field, value, ...] list from the wire client, a dict from redis-py's.
        raws = reply.values() if isinstance(reply, dict) else (reply or [])[1::2]
        records = [_decode_record(raw) for raw in raws]
        if not records:
            return None
        newest = max(records, key=lambda record: record.created_at)
        return newest.turn_id if newest.status == "running" else None

    async def get_turn(self, session_id: str, turn_id: str) -> TurnRecord | None:
        reply = await self._run("session", list(_keys(session_id)), ["turn", turn_id])
        if reply is None:
            return None
        record = _decode_record(reply[0])
        holder = reply[1]
        if record.status == "running" and (
            holder is None or holder.decode().split(":", 1)[1] != turn_id
        ):
            record.status = "pending"
        return record

    async def purge_expired(self) -> int:
        return 0  # Redis expires keys itself

    # -- notifications ----------------------------------------------------------------------

    async def wait_for_release(self, session_id: str, timeout: float) -> None:
        event, first = self._waiters.register(session_id)
        try:
            if first:
                await self._subscribe(_channel(session_id))
            # Subscribed now: if the lease went while we subscribed, there is nothing to
            # wait for (the release message may have been sent before we listened).
            lease_key = _keys(session_id)[3]
            if not await self._command("EXISTS", lease_key):
                return
            await wait_event(event, timeout)
        except StoreUnavailable:
            # Without pub/sub the caller's re-check after the timeout still works; keep
            # the wait short so an outage does not stall the turn longer than needed.
            await wait_event(event, min(timeout, 0.5))
        finally:
            if self._waiters.unregister(session_id, event):
                await self._unsubscribe(_channel(session_id))

    async def _ensure_pubsub(self) -> Any:
        """The shared pub/sub connection, built (again) with every channel it must hear.

        Called with `_sub_lock` held.
        """
        if self._pubsub is None:
            if self.cluster:
                # Cluster pub/sub picks its node from the slot map, which commands load
                # lazily: load it first.
                await self._call(self._client.initialize())
            pubsub = self._client.pubsub()
            try:
                await self._call(pubsub.subscribe(INTERRUPTS))
                if self._subscribed:
                    await self._call(pubsub.ssubscribe(*self._subscribed))
            except BaseException:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                raise
            self._pubsub = pubsub
            # A release published while nobody listened is lost; waiters re-check instead.
            self._waiters.wake_all()
        return self._pubsub

    async def _drop_pubsub(self) -> None:
        """Forget a broken pub/sub connection, so the reader builds a fresh one.

        redis-py's pub/sub does not reliably redial a connection the server closed (it
        keeps reading the dead socket), so a failure means a new connection, not a retry.
        Called with `_sub_lock` held.
        """
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            self._waiters.wake_all()

    async def _subscribe(self, channel: str) -> None:
        async with self._sub_lock:
            pubsub = await self._ensure_pubsub()
            if channel not in self._subscribed:
                await self._call(pubsub.ssubscribe(channel))
                self._subscribed.add(channel)

    async def _unsubscribe(self, channel: str) -> None:
        async with self._sub_lock:
            if channel in self._subscribed and self._pubsub is not None:
                self._subscribed.discard(channel)
                with contextlib.suppress(*_FAILURES, StoreUnavailable):
                    await self._call(self._pubsub.sunsubscribe(channel))

    async def _read_notifications(self) -> None:
        """Deliver release wake-ups and interrupt requests; survives Redis restarts."""
        while True:
            try:
                async with self._sub_lock:
                    pubsub = await self._ensure_pubsub()
                if self.cluster:
                    message = await pubsub.get_sharded_message(
                        ignore_subscribe_messages=True, timeout=0.05
                    )
                    if message is None:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=0.05
                        )
                else:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection trouble: rebuild after a short back-off
                log.debug("redis pub/sub reader: %s", exc)
                async with self._sub_lock:
                    await self._drop_pubsub()
                await asyncio.sleep(0.2)
                continue
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = message.get("channel")
        if isinstance(channel, bytes):
            channel = channel.decode()
        if not isinstance(channel, str):
            return
        if channel == INTERRUPTS:
            try:
                session_id, turn_id = _decode_interrupt(message["data"])
            except (msgspec.DecodeError, KeyError, TypeError):
                return
            for callback in self._interrupt_callbacks:
                callback(session_id, turn_id)
            return
        if channel.startswith("ah:{") and channel.endswith("}:released"):
            self._waiters.wake(channel[4:-10])

    async def request_interrupt(self, session_id: str, turn_id: str) -> None:
        await self._command("PUBLISH", INTERRUPTS, _encode((session_id, turn_id)))

    def on_interrupt(self, callback: Callable[[str, str], None]) -> None:
        self._interrupt_callbacks.append(callback)
