"""`--store postgresql://... --cache redis://...`: Redis as the hot tier in front of PostgreSQL.

`CachedStore` is a `SessionStore` that wraps the PostgreSQL store. PostgreSQL stays the
system of record and keeps the lease: every step that changes a session runs there first,
so a turn acknowledged to a client is committed in PostgreSQL whatever Redis does. Redis
holds, per session, the window of recent messages and the answers of its latest turns,
each labelled with the session's version (a `WindowMark`: created_at and message count),
and serves them only when PostgreSQL confirms that version:

* begin: one Redis round trip reads the labelled window (and a cached answer of this turn
  id); PostgreSQL's begin step, which takes the lease and reads the metadata anyway, is
  told the label and answers only the messages after it (none when it is current). A
  stale label of another incarnation, or a missing entry, costs nothing but PostgreSQL
  building the whole window, as without a cache.
* a begin whose caller's own window cache holds the session (its mark, `known`): Redis is
  not read, since its copy would duplicate the caller's; PostgreSQL checks that mark
  instead and answers the messages after it (counted as `local`).
* a retried completed turn: its cached answer is served when PostgreSQL's read of the
  session's incarnation (no lock, no write) matches the answer's label.
* commit: PostgreSQL commits, then the window and answer are written to Redis
  with the new label (`lua/cache_commit.lua`), so the next turn of the session hits.

Redis down, restarted empty, or an entry expired (`--cache-ttl`): the next turn of each
session reads its window from PostgreSQL and writes it back. A failing cache is bypassed
for a second at a time (a warning per outage, `agenthost_session_cache_requests_total{
result="bypass"}`); no request fails because of the cache alone.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

import msgspec

from agenthost.connections.redis import RedisSettings, close_clients
from agenthost.connections.redis_commands import Command
from agenthost.connections.redis_wire import RedisWire
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
    no_commands,
)
from agenthost.stores.notify import ReleaseWaiters

if TYPE_CHECKING:  # asyncpg is imported only by a process whose store is PostgreSQL
    from agenthost.stores.postgres import PostgresStore

__all__ = ["CachedStore"]

log = logging.getLogger("agenthost.stores.cached")

BYPASS_S = 1.0
"""After a cache failure, turns go straight to PostgreSQL for this long before Redis is
tried again: an unreachable Redis costs one connect timeout a second, not one a turn."""

ANSWERS_KEPT = 16
"""Answers cached per session (its latest turns): the retries worth serving from Redis."""

PENDING_KEPT = 100_000
"""Begun turns whose window is remembered until their commit (turns abandoned without a
commit, failure or release fall off the old end)."""


class _Answer(msgspec.Struct, array_like=True):
    created_at: float
    """The session's incarnation the answer belongs to."""
    record: TurnRecord


_encode = msgspec.json.encode
_decode_answer = msgspec.json.Decoder(_Answer).decode
_decode_messages = msgspec.json.Decoder(list[Message]).decode


def _script(name: str) -> tuple[str, str]:
    source = resources.files("agenthost.stores").joinpath("lua", f"{name}.lua").read_text()
    return hashlib.sha1(source.encode()).hexdigest(), source


def _keys(session_id: str) -> list[str]:
    tag = f"ahc:{{{session_id}}}"
    return [f"{tag}:state", f"{tag}:window", f"{tag}:answered"]


def _label(version: WindowMark) -> str:
    return f"{version.created_at!r}/{version.count}"


def _parse_label(raw: bytes) -> WindowMark | None:
    created, _, count = raw.decode().partition("/")
    try:
        return WindowMark(float(created), int(count))
    except ValueError:
        return None


@dataclass
class _Cached:
    """What the cache held for a session at the start of a turn."""

    version: WindowMark | None
    window: list[Message]
    answer: _Answer | None


@dataclass
class _Pending:
    """A begun turn's window, kept until its commit writes the next one."""

    created_at: float
    history: list[Message]
    cap: int
    appends: bool
    """The cache held this turn's window: the commit appends two messages to it."""


class CachedStore:
    """The PostgreSQL store with a Redis cache in front; see the module docstring."""

    def __init__(
        self,
        store: PostgresStore,
        cache_url: str,
        *,
        ttl_s: float = 3600.0,
        answers_kept: int = ANSWERS_KEPT,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"cache TTL must be > 0 s, not {ttl_s}")
        self.store = store
        self.url = store.url
        self.cache_url = cache_url
        self.settings = RedisSettings.from_url(cache_url)
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self.answers_kept = answers_kept
        self.hits = 0
        self.misses = 0
        self.bypassed = 0
        self.local = 0
        self._wire: RedisWire | None = None
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._sources = {name: _script(name) for name in ("cache_read", "cache_commit")}
        self._bypass_until = 0.0
        self._failing = False
        self._pending: OrderedDict[tuple[str, str, int], _Pending] = OrderedDict()

    @property
    def waiters(self) -> ReleaseWaiters:
        """The wrapped store's release waiters (the conformance suite looks at them)."""
        return self.store.waiters

    def counts(self) -> dict[str, int]:
        """Turn begins served by the cache (hit), by PostgreSQL (miss), past a failing
        cache (bypass), or by the process's own window, which PostgreSQL confirmed, without
        reading the cache (local)."""
        return {
            "hit": self.hits,
            "miss": self.misses,
            "bypass": self.bypassed,
            "local": self.local,
        }

    # -- plumbing ---------------------------------------------------------------------------

    async def open(self) -> None:
        await self.store.open()
        # Connections are made on first use: a Redis that is down now is bypassed, it does
        # not keep the server from starting.
        timeout = self.settings.socket_timeout or 0.5
        connect = self.settings.connect_timeout or 0.5
        if self.settings.cluster:
            self._client = self.settings.light_client()
            for name, (_, source) in self._sources.items():
                self._scripts[name] = self._client.register_script(source)
        else:
            self._wire = self.settings.wire(timeout=timeout, connect_timeout=connect, shared=True)

    async def close(self) -> None:
        await close_clients(self._wire, self._client)
        self._wire = self._client = None
        await self.store.close()

    async def ping(self) -> None:
        # Readiness is PostgreSQL's: turns go on without the cache.
        await self.store.ping()

    def _usable(self) -> bool:
        if time.monotonic() < self._bypass_until:
            return False
        return self._wire is not None or self._client is not None

    def _failed(self, exc: BaseException) -> None:
        self._bypass_until = time.monotonic() + BYPASS_S
        if not self._failing:
            log.warning(
                "session cache %r unavailable, serving turns from PostgreSQL alone: %s",
                self.settings,
                exc,
            )
        self._failing = True

    def _ok(self) -> None:
        if self._failing:
            log.warning("session cache %r is back", self.settings)
        self._failing = False

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        if self._wire is not None:
            sha, source = self._sources[name]
            return await self._wire.evalsha(sha, source, keys, args)
        return await self._scripts[name](keys=keys, args=args)

    async def _command(self, *args: Any) -> Any:
        if self._wire is not None:
            return await self._wire.call(*args)
        return await self._client.execute_command(*args)

    # -- the cache ----------------------------------------------------------------------------

    async def _read(self, session_id: str, turn_id: str, window: int) -> _Cached | None:
        if not self._usable():
            self.bypassed += 1
            return None
        try:
            version, answer, messages = await self._run(
                "cache_read", _keys(session_id), [turn_id, window]
            )
            cached = _Cached(
                None if not version else _parse_label(version),
                # One decode of the whole window, not one per message.
                _decode_messages(b"[" + b",".join(messages) + b"]") if messages else [],
                _decode_answer(answer) if answer else None,
            )
        except Exception as exc:  # any cache failure: PostgreSQL alone
            self._failed(exc)
            self.bypassed += 1
            return None
        self._ok()
        return cached

    async def _write(self, args: list[Any], session_id: str) -> None:
        if not self._usable():
            return
        try:
            await self._run("cache_commit", _keys(session_id), args)
        except Exception as exc:
            self._failed(exc)
            return
        self._ok()

    async def _forget(self, session_id: str) -> None:
        if not self._usable():
            return
        try:
            await self._command("DEL", *_keys(session_id))
        except Exception as exc:
            self._failed(exc)

    def _remember(self, lease: Lease, pending: _Pending) -> None:
        self._pending[(lease.session_id, lease.turn_id, lease.fence)] = pending
        if len(self._pending) > PENDING_KEPT:
            self._pending.popitem(last=False)

    def _take(self, lease: Lease) -> _Pending | None:
        return self._pending.pop((lease.session_id, lease.turn_id, lease.fence), None)

    # -- turns --------------------------------------------------------------------------------

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
        """As the PostgreSQL store's, with the window built from Redis's copy plus whatever
        PostgreSQL has after it (`delta` False). Given the caller's own mark (`known`: the
        process's window cache holds the window up to it), Redis is not read: its copy
        would duplicate the caller's, and PostgreSQL confirms the caller's mark under the
        row lock as it would Redis's, answering a delta from it (the commit still writes
        the cache, for the other processes)."""
        cached: _Cached | None = None
        mark = known
        if known is None:
            cached = await self._read(session_id, turn_id, window)
        if cached is not None:
            answer = cached.answer
            # A completed turn's answer never changes while its session lives: served if
            # the session is still the incarnation the answer was cached in.
            if (
                answer is not None
                and answer.record.fingerprint in ("", fingerprint)
                and await self.store.session_created(session_id) == answer.created_at
            ):
                self.hits += 1
                return Completed(answer.record)
            version = cached.version
            if version is not None and len(cached.window) >= min(window, version.count):
                mark = version
        result = await self.store.begin_turn(
            session_id,
            turn_id,
            message,
            metadata_patch=metadata_patch,
            lease_ms=lease_ms,
            window=window,
            ttl_s=ttl_s,
            fingerprint=fingerprint,
            known=mark,
        )
        if not isinstance(result, Started):
            return result
        if known is not None:
            self._remember(result.lease, self._known_begun(result, window))
            return result
        current = WindowMark(result.created_at, result.message_count)
        if result.delta:  # PostgreSQL confirmed Redis's copy and sent what came after it
            assert cached is not None
            joined = [*cached.window, *result.history]
            result.history = joined[max(0, len(joined) - window) :] if window else []
            result.delta = False
        current_in_redis = cached is not None and cached.version == current
        if current_in_redis:
            self.hits += 1  # nothing of the window came from PostgreSQL
        elif cached is not None:
            self.misses += 1
        self._remember(
            result.lease, _Pending(result.created_at, result.history, window, current_in_redis)
        )
        return result

    def _known_begun(self, result: Started, window: int) -> _Pending:
        """What the commit needs of a begin whose caller held the window up to its mark."""
        if result.delta:
            # The caller's copy is of this incarnation: the commit appends to Redis's copy
            # if that is at the version the turn began with, and drops it otherwise.
            self.local += 1
            return _Pending(result.created_at, [], window, True)
        # The caller's mark was not the session's: PostgreSQL sent the whole window.
        self.misses += 1
        return _Pending(result.created_at, result.history, window, False)

    def runs_after_commit(self, wire: object) -> bool:
        return False

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
        no_commands(then)
        record = await self.store.commit_turn(
            lease, user=user, assistant=assistant, metadata=metadata, ttl_s=ttl_s, state=state
        )
        # Committed in PostgreSQL: from here on, nothing that happens to the cache matters
        # to the answer.
        pending = self._take(lease)
        if pending is not None:
            before = WindowMark(pending.created_at, user.seq)
            after = WindowMark(pending.created_at, assistant.seq + 1)
            if pending.appends:
                mode, messages = "append", [user, assistant]
            else:
                mode, messages = "replace", [*pending.history, user, assistant]
            if pending.cap < len(messages):
                messages = messages[len(messages) - pending.cap :] if pending.cap else []
            args: list[Any] = [
                mode,
                _label(before),
                _label(after),
                lease.turn_id,
                _encode(_Answer(pending.created_at, record)),
                pending.cap,
                self.ttl_ms,
                self.answers_kept,
                *(_encode(m) for m in messages),
            ]
            await self._write(args, lease.session_id)
        return record

    async def fail_turn(self, lease: Lease, error: TurnError, ttl_s: float) -> TurnRecord | None:
        self._take(lease)
        return await self.store.fail_turn(lease, error, ttl_s)

    async def release_lease(self, lease: Lease) -> bool:
        self._take(lease)
        return await self.store.release_lease(lease)

    async def renew_lease(self, lease: Lease, lease_ms: int) -> bool:
        return await self.store.renew_lease(lease, lease_ms)

    # -- sessions: PostgreSQL (and its replicas) answer ---------------------------------------

    async def create_session(
        self, session_id: str, metadata: dict[str, Any], ttl_s: float
    ) -> SessionInfo:
        return await self.store.create_session(session_id, metadata, ttl_s)

    async def get_session(
        self, session_id: str, *, min_seq: int | None = None
    ) -> SessionInfo | None:
        return await self.store.get_session(session_id, min_seq=min_seq)

    async def delete_session(self, session_id: str) -> bool:
        deleted = await self.store.delete_session(session_id)
        # A new incarnation has a new created_at, so what is left here could never be
        # served; deleting it frees the memory at once.
        await self._forget(session_id)
        return deleted

    async def list_messages(
        self,
        session_id: str,
        limit: int,
        before: int | None = None,
        *,
        min_seq: int | None = None,
    ) -> list[Message] | None:
        return await self.store.list_messages(session_id, limit, before, min_seq=min_seq)

    async def get_turn(self, session_id: str, turn_id: str) -> TurnRecord | None:
        return await self.store.get_turn(session_id, turn_id)

    async def running_turn(self, session_id: str) -> str | None:
        return await self.store.running_turn(session_id)

    async def unfinished_turn(self, session_id: str) -> str | None:
        return await self.store.unfinished_turn(session_id)

    async def wait_for_release(self, session_id: str, timeout: float) -> None:
        await self.store.wait_for_release(session_id, timeout)

    async def request_interrupt(self, session_id: str, turn_id: str) -> None:
        await self.store.request_interrupt(session_id, turn_id)

    def on_interrupt(self, callback: Callable[[str, str], None]) -> None:
        self.store.on_interrupt(callback)

    async def purge_expired(self) -> int:
        return await self.store.purge_expired()
