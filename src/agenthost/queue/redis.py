"""`redis://`: the work queue as Redis Streams with one consumer group, a stream per tenant.

- `ahq:{t:<tenant>}:turns`, a stream with the group `workers`: the tenant's queued and
  running turns (the hash tag spreads tenants over a Cluster's shards);
- `ahq:tenants`, a set: tenants with turns queued or running (the round-robin's list; on a
  single server a tenant leaves it with its last acknowledgement, in the same script);
- `ahq:wake`, a list: one token per enqueue, which an idle worker's `BLMPOP` wakes on (taking
  as many tokens as it has free slots, so stale ones cost no empty takes);
- `ah:{sid}:queued`, a hash on the session's slot: turn id -> its entry id, while the turn
  is queued or running (a session's turns share their tenant's stream, so entry ids order
  them). A turn queued while nothing of its session is queued or running is marked `a`
  ("alone") in its entry: its worker need not look for earlier turns of its session. On a
  single server such an entry also names its marker (`q`, `t`), and the take reads the
  marker as it takes the entry: the worker need not read it to find the turn withdrawn.

A worker takes with `XREADGROUP ... >` (one entry per tenant stream, tenants in rotation;
on a single server one XREADGROUP over every tenant's stream per pass);
the entry stays in the group's pending list, owned by that worker, until `XACK` (+ `XDEL`)
after the turn's fenced commit (on a single server the acknowledgements of one loop
iteration go as one script, in that iteration's write). The worker touches what it runs
(`XCLAIM` to itself, `JUSTID`: its idle time restarts); an entry idle for `claim_after` (its
worker was killed or paused) is taken over with `XAUTOCLAIM`. A draining worker hands a
turn back by setting its idle time past `claim_after` (`XCLAIM ... IDLE`), so the next
worker's `XAUTOCLAIM` takes it at once, in its place in the stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any

import msgspec
import redis.exceptions as rexc

from agenthost.connections.redis import RedisSettings, close_clients
from agenthost.connections.redis_commands import IF_ZERO, Command
from agenthost.connections.redis_wire import RedisWire, ReplyError
from agenthost.core.errors import QueueFull, SessionBusy, StoreUnavailable
from agenthost.queue.base import Delivery, QueuedTurn, QueueStats, Withdrawn, tenant_of

__all__ = ["RedisWorkQueue"]

log = logging.getLogger("agenthost.queue")

_FAILURES = (rexc.ConnectionError, rexc.TimeoutError, rexc.ClusterDownError, OSError)
GROUP = "workers"
TENANTS = "ahq:tenants"
WAKE = "ahq:wake"
QUEUED_TTL_S = 7 * 24 * 3600  # a queued-turn marker outlives any turn it names

# XLEN counts queued and running entries (acknowledged ones are deleted): the tenant's limit.
# The group is made with the stream, so every entry is delivered by `>`.
_ENQUEUE = """
local n = redis.call('XLEN', KEYS[1])
if tonumber(ARGV[1]) > 0 and n >= tonumber(ARGV[1]) then return false end
if n == 0 and redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], 'workers', '$', 'MKSTREAM')
end
if ARGV[3] == '1' then return redis.call('XADD', KEYS[1], '*', 'j', ARGV[2], 'a', '1') end
return redis.call('XADD', KEYS[1], '*', 'j', ARGV[2])
"""

# The turn's place, set only while its "" placeholder is there: a worker that already ran the
# turn and acknowledged it (HDEL) must not see it come back.
_PLACE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == '' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
"""

# On a single server every key is on the one node: the whole enqueue is one script, one
# round trip. KEYS: queued hash, tenant stream, tenants set, wake list. With ARGV[6] "1" (a
# turn with on_busy=reject), a session with another turn queued or running gets that hash
# back instead (busy: nothing queued). Atomic, so the marker is set once, to the entry id (no
# "" placeholder as on a Cluster). An entry alone in its session names its marker (`q`, `t`):
# the take reads the marker with the entry, in its own script. A session with nothing queued
# has no turn of that id queued (no HEXISTS); a tenant whose stream holds entries is in the
# tenants set already (every single-server script that empties a stream takes the tenant
# out in the same step, and only this one puts it back), so only an empty stream's SADDs.
_ENQUEUE_ONE_NODE = """
local held = redis.call('HLEN', KEYS[1])
if held > 0 then
  if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
  if ARGV[6] == '1' then return redis.call('HGETALL', KEYS[1]) end
end
local n = redis.call('XLEN', KEYS[2])
if tonumber(ARGV[2]) > 0 and n >= tonumber(ARGV[2]) then return -1 end
if n == 0 then
  if redis.call('EXISTS', KEYS[2]) == 0 then
    redis.call('XGROUP', 'CREATE', KEYS[2], 'workers', '$', 'MKSTREAM')
  end
  redis.call('SADD', KEYS[3], ARGV[5])
end
local entry
if held == 0 then
  entry = redis.call('XADD', KEYS[2], '*', 'j', ARGV[3], 'a', '1', 'q', KEYS[1], 't', ARGV[1])
else
  entry = redis.call('XADD', KEYS[2], '*', 'j', ARGV[3])
end
redis.call('HSET', KEYS[1], ARGV[1], entry)
redis.call('EXPIRE', KEYS[1], ARGV[4])
if redis.call('LPUSH', KEYS[4], 1) > 1000 then redis.call('LTRIM', KEYS[4], 0, 999) end
return 1
"""

# Acknowledge on a single server, every turn acknowledged in one loop iteration at once:
# KEYS tenants set; ARGV, five per turn: tenant stream, entry id, queued hash, turn id,
# tenant. Each stream's entries go in one XACK and one XDEL; a tenant with nothing queued or
# running leaves the round-robin's list (its next enqueue adds it again, in a script too, so
# the two never interleave). The keys not in KEYS are on the one server.
_ACK_ONE_NODE = """
local ids, tenants, order = {}, {}, {}
for i = 1, #ARGV, 5 do
  local stream = ARGV[i]
  if not ids[stream] then
    ids[stream], tenants[stream] = {}, ARGV[i + 4]
    order[#order + 1] = stream
  end
  table.insert(ids[stream], ARGV[i + 1])
  redis.call('HDEL', ARGV[i + 2], ARGV[i + 3])
end
for _, stream in ipairs(order) do
  redis.call('XACK', stream, 'workers', unpack(ids[stream]))
  redis.call('XDEL', stream, unpack(ids[stream]))
  if redis.call('XLEN', stream) == 0 then redis.call('SREM', KEYS[1], tenants[stream]) end
end
"""

# A Cluster's reject check, on the session's own slot: the turn's placeholder is set only if
# no other turn of the session is queued or running (else that hash comes back).
_PLACEHOLD_ALONE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('HLEN', KEYS[1]) > 0 then return redis.call('HGETALL', KEYS[1]) end
redis.call('HSET', KEYS[1], ARGV[1], '')
return 1
"""

# Withdraw a turn on a single server (KEYS queued hash, tenant stream, tenants set; ARGV turn
# id, tenant): its marker goes; its entry goes too unless a worker took it (then that worker
# finds the marker gone). 1: removed, nobody took it.
_CANCEL_ONE_NODE = """
local place = redis.call('HGET', KEYS[1], ARGV[1])
if not place then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
if place == '' or #redis.call('XPENDING', KEYS[2], 'workers', place, place, 1) > 0 then
  return 0
end
redis.call('XDEL', KEYS[2], place)
if redis.call('XLEN', KEYS[2]) == 0 then redis.call('SREM', KEYS[3], ARGV[2]) end
return 1
"""

# Withdraw every turn of a deleted session (same KEYS; ARGV tenant): the ids of those removed.
_DROP_ONE_NODE = """
local places = redis.call('HGETALL', KEYS[1])
if #places == 0 then return {} end
redis.call('DEL', KEYS[1])
local removed = {}
for i = 1, #places, 2 do
  local place = places[i + 1]
  if place ~= '' and #redis.call('XPENDING', KEYS[2], 'workers', place, place, 1) == 0 then
    redis.call('XDEL', KEYS[2], place)
    removed[#removed + 1] = places[i]
  end
end
if redis.call('XLEN', KEYS[2]) == 0 then redis.call('SREM', KEYS[3], ARGV[1]) end
return removed
"""

# A take's new entries on a single server, one round trip: the tenant list (sorted as
# `_tenants` sorts it, "-" being the tenant ""), rotated by ARGV[4], then the passes of the
# round-robin as `_take_now` makes them on a Cluster. KEYS: tenants set; ARGV: group,
# consumer, count, rotation. The streams are named from the set, not passed as KEYS: the
# script runs on a single server only, where every key is on it. An entry that names its
# queued marker (`q`, `t`: a turn alone in its session) has the marker read here too, in the
# same step as the read that takes it: 1 if the marker names the entry (not withdrawn), else
# 0 (the worker reads it again: `earlier`). Returns a flat list: stream, entry id, fields,
# that 1 or 0, for each entry.
_TAKE_ONE_NODE = """
local tenants = redis.call('SMEMBERS', KEYS[1])
local n = #tenants
if n == 0 then return {} end
table.sort(tenants, function(a, b)
  if a == '-' then a = '' end
  if b == '-' then b = '' end
  return a < b
end)
local start = tonumber(ARGV[4]) % n
local active = {}
for i = 0, n - 1 do
  active[i + 1] = 'ahq:{t:' .. tenants[(start + i) % n + 1] .. '}:turns'
end
local count = tonumber(ARGV[3])
local out = {}
local taken = 0
local function add(reply)
  local got = {}
  for _, stream in ipairs(reply or {}) do
    for _, entry in ipairs(stream[2]) do
      out[#out + 1] = stream[1]
      out[#out + 1] = entry[1]
      out[#out + 1] = entry[2]
      local fields, queued, turn = entry[2], nil, nil
      for i = 1, #fields, 2 do
        if fields[i] == 'q' then queued = fields[i + 1] elseif fields[i] == 't' then
          turn = fields[i + 1]
        end
      end
      out[#out + 1] = (queued and turn and redis.call('HGET', queued, turn) == entry[1])
        and 1 or 0
      taken = taken + 1
      got[stream[1]] = true
    end
  end
  return got
end
while taken < count and #active > 0 do
  if #active == 1 then
    local ask = count - taken
    local before = taken
    add(redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ask, 'STREAMS',
                   active[1], '>'))
    if taken - before < ask then break end
  else
    local still = {}
    local done = 0
    while done < #active and taken < count do
      local chunk = {}
      local args = {'XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS'}
      for i = done + 1, math.min(#active, done + count - taken) do
        chunk[#chunk + 1] = active[i]
        args[#args + 1] = active[i]
      end
      done = done + #chunk
      for _ = 1, #chunk do args[#args + 1] = '>' end
      local got = add(redis.call(unpack(args)))
      for _, key in ipairs(chunk) do
        if got[key] then still[#still + 1] = key end
      end
    end
    active = still
  end
end
return out
"""

_ENQUEUE_SHA = hashlib.sha1(_ENQUEUE_ONE_NODE.encode()).hexdigest()
_TAKE_SHA = hashlib.sha1(_TAKE_ONE_NODE.encode()).hexdigest()
_ACK_SHA = hashlib.sha1(_ACK_ONE_NODE.encode()).hexdigest()
_CANCEL_SHA = hashlib.sha1(_CANCEL_ONE_NODE.encode()).hexdigest()
_DROP_SHA = hashlib.sha1(_DROP_ONE_NODE.encode()).hexdigest()

_encode = msgspec.json.encode
_decode = msgspec.json.Decoder(QueuedTurn).decode


def stream_key(tenant: str) -> str:
    return f"ahq:{{t:{tenant or '-'}}}:turns"


def _queued_key(session_id: str) -> str:
    return f"ah:{{{session_id}}}:queued"


def _pairs(flat: list[Any] | None) -> dict[Any, Any]:
    """A RESP2 flat list of fields and values as a dict."""
    items = flat or []
    return dict(zip(items[::2], items[1::2], strict=True))


def _entry_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _marks(place: bytes | str | None, entry_id: str) -> bool:
    """Whether a turn's queued marker names this entry ("" while a Cluster's enqueue places
    it); gone, or naming another entry of a turn sent again since, it was withdrawn."""
    return place is not None and (not place or _text(place) == entry_id)


def _settle(waiting: list[asyncio.Future[None]], reply: Any) -> None:
    """End the waits of acknowledgements sent together, with their script's reply: done, or
    failed as `RedisWire.call` fails (a transient error reply or a lost connection as
    StoreUnavailable, any other error reply as RuntimeError)."""
    error: BaseException | None = None
    if isinstance(reply, ReplyError):
        try:
            RedisWire.check(reply)
        except (StoreUnavailable, RuntimeError) as exc:
            error = exc
    elif isinstance(reply, BaseException):
        error = reply
    for future in waiting:
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


def _busy(places: dict[Any, Any]) -> SessionBusy:
    """The reject of a turn whose session has these turns (id -> entry) queued or running,
    worded as the engine words it: the first of them (by queue order) is the one running."""
    ordered = sorted(
        (_entry_order(_text(p)) if p else (2**63, 0), _text(t)) for t, p in places.items()
    )
    return SessionBusy(f"this session is running turn {ordered[0][1]}")


class RedisWorkQueue:
    """The queue on a Redis server or Cluster (see the module's docstring)."""

    def __init__(self, url: str, *, claim_after: float = 10.0, max_queued: int = 0) -> None:
        self.url = url
        self.settings = RedisSettings.from_url(url)
        self.claim_after = claim_after
        self.max_queued = max_queued
        self._client: Any = None
        self._blocking: Any = None
        self._enqueue: Any = None
        # On a single server the steps of every turn (enqueue, take, order, acknowledge) go
        # through the pipelining client: measured, each redis-py call cost a turn far more.
        # It is the process's one client for the server, shared with the store and the
        # broker (`RedisSettings.wire(shared=True)`), so their commands share writes.
        self._wire: RedisWire | None = None
        # The take's wait for an enqueue: a connection of its own, as the wait blocks it.
        self._waking: RedisWire | None = None
        self._waking_lock = asyncio.Lock()
        self._place: Any = None
        self._placehold_alone: Any = None
        self._rotation = 0
        self._reclaimed_at = 0.0
        # Acknowledgements asked for in this loop iteration, sent as one script as its
        # commands leave (`RedisWire.before_write`): their ARGV, and who waits for each.
        self._acks: list[Any] = []
        self._acked: list[asyncio.Future[None]] = []
        self._retrying: set[asyncio.Task[None]] = set()
        # The last take found fewer turns than it asked for: none was left to take.
        self._drained = False

    async def open(self) -> None:
        self._client = self.settings.pooled_client(
            max_connections=1000, connect_timeout=1.0, pool_timeout=2.0, socket_timeout=2.0
        )
        # BLPOP's own: a reply may come up to its timeout after the command.
        self._blocking = self.settings.pooled_client(
            max_connections=1000, connect_timeout=1.0, pool_timeout=2.0, socket_timeout=10.0
        )
        self._enqueue = self._client.register_script(_ENQUEUE)
        if not self.settings.cluster:
            self._wire = self.settings.wire(shared=True)
            self._waking = self.settings.wire(timeout=3.0, connect_timeout=1.0)
        self._place = self._client.register_script(_PLACE)
        self._placehold_alone = self._client.register_script(_PLACEHOLD_ALONE)

    async def close(self) -> None:
        await close_clients(self._waking, None)
        self._waking = None
        await close_clients(self._wire, self._client)
        self._wire = None
        await close_clients(None, self._blocking)
        self._client = self._blocking = None

    async def enqueue(self, turn: QueuedTurn) -> bool:
        if not turn.enqueued_at:
            turn = msgspec.structs.replace(turn, enqueued_at=time.time())
        key = stream_key(turn.tenant)
        queued = _queued_key(turn.session_id)
        reject_if_busy = turn.on_busy == "reject"
        if self._wire is not None:
            added = await self._wire.evalsha(
                _ENQUEUE_SHA, _ENQUEUE_ONE_NODE, [queued, key, TENANTS, WAKE],
                [turn.turn_id, self.max_queued, _encode(turn), QUEUED_TTL_S, turn.tenant or "-",
                 int(reject_if_busy)],
            )  # fmt: skip
            if isinstance(added, list):
                raise _busy(_pairs(added))
            if added == -1:
                raise QueueFull(
                    f"tenant has {self.max_queued} turns queued; retry when some have run"
                )
            return bool(added)
        # A Cluster: the keys live on different nodes, so step by step.
        try:
            # The entry id is set once the entry exists; "" meanwhile (a later turn).
            if reject_if_busy:
                held = await self._placehold_alone(keys=[queued], args=[turn.turn_id])
                if isinstance(held, list):
                    raise _busy(_pairs(held))
                if not held:
                    return False
                places = 1  # alone in its session, or it was refused
            else:
                async with self._client.pipeline(transaction=False) as pipe:
                    pipe.hsetnx(queued, turn.turn_id, "")
                    pipe.hlen(queued)
                    added, places = await pipe.execute()
                if not added:
                    return False
            alone = "1" if places == 1 else "0"
            entry = await self._enqueue(keys=[key], args=[self.max_queued, _encode(turn), alone])
            if entry is None:
                await self._client.hdel(queued, turn.turn_id)
                raise QueueFull(
                    f"tenant has {self.max_queued} turns queued; retry when some have run"
                )
            await self._place(keys=[queued], args=[turn.turn_id, entry, QUEUED_TTL_S])
            await self._client.sadd(TENANTS, turn.tenant or "-")
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.lpush(WAKE, 1)
                pipe.ltrim(WAKE, 0, 999)
                await pipe.execute()
        except _FAILURES as exc:
            raise StoreUnavailable(f"redis queue: {exc}") from None
        return True

    async def _tenant_keys(self) -> list[str]:
        """Every tenant's stream, read afresh each time: a tenant that just queued its first
        turn is served in the very next round."""
        return [stream_key(t) for t in await self._tenants()]

    async def _tenants(self) -> list[str]:
        if self._wire is not None:
            members = await self._wire.call("SMEMBERS", TENANTS)
        else:
            members = await self._client.smembers(TENANTS)
        return ["" if t == "-" else t for t in sorted(_text(m) for m in members)]

    async def take(self, consumer: str, count: int, wait: float) -> list[Delivery]:
        deadline = time.monotonic() + wait
        try:
            if self._drained and wait > 0:
                # The last take left nothing behind: whatever came since pushed a token, so
                # wait for one before looking (a look now costs the tenant list and a read,
                # and finds nothing at least as often as not: measured, 2 of the worker's
                # round trips per wake-up).
                await self._wait_for_enqueue(count, max(0.01, min(wait, 1.0)))
            while True:
                taken = await self._take_now(consumer, count)
                self._drained = len(taken) < count
                remaining = deadline - time.monotonic()
                if taken or remaining <= 0:
                    return taken
                # Woken by an enqueue, or at most every second to take back stopped turns.
                await self._wait_for_enqueue(count, max(0.01, min(remaining, 1.0)))
        except _FAILURES as exc:
            raise StoreUnavailable(f"redis queue: {exc}") from None

    async def _wait_for_enqueue(self, count: int, timeout: float) -> None:
        """Block until a wake token is pushed (an enqueue), up to `timeout` seconds.

        Takes up to `count` tokens at once: a token pushed while no worker waited is stale by
        the time a worker waits (its turn was there for the take before the wait), and one
        token per wait made a worker spin through one empty take per stale token, about one
        per turn (measured). A worker with `count` free slots takes as many tokens as turns
        it can run, leaving the rest to wake other workers.
        """
        wire = self._waking
        if wire is not None and not self._waking_lock.locked():
            async with self._waking_lock:  # one blocked command per connection
                await wire.call("BLMPOP", timeout, 1, WAKE, "LEFT", "COUNT", count)
            return
        await self._blocking.blpop([WAKE], timeout=timeout)

    async def _take_now(self, consumer: str, count: int) -> list[Delivery]:
        taken: list[Delivery] = []
        now = time.monotonic()
        reclaim = now - self._reclaimed_at >= self.claim_after / 4
        if self._wire is not None and not reclaim:
            # The tenant list and the round-robin's reads in one script: one round trip
            # (measured: the list and a read were two of the worker's round trips per take).
            rotation = self._rotation
            self._rotation += 1
            flat = await self._wire.evalsha(
                _TAKE_SHA, _TAKE_ONE_NODE, [TENANTS], [GROUP, consumer, count, rotation]
            )
            for i in range(0, len(flat), 4):
                key, entry_id, fields = _text(flat[i]), flat[i + 1], _pairs(flat[i + 2])
                taken.append(self._delivery(key, entry_id, fields, 1, marked=flat[i + 3] == 1))
            return taken
        keys = await self._tenant_keys()
        if not keys:
            return []
        start = self._rotation % len(keys)
        self._rotation += 1
        order = keys[start:] + keys[:start]
        if reclaim:
            self._reclaimed_at = now
            for key in order:
                if len(taken) >= count:
                    break
                taken += await self._reclaim(key, consumer, count - len(taken))
        # Round-robin: one turn of each tenant per pass, passes until `count` or none left;
        # a tenant that had none leaves the passes, and the last one left gives the rest.
        active = order
        while len(taken) < count and active:
            if len(active) == 1:
                key, ask = active[0], count - len(taken)
                got = await self._read_group(key, consumer, ask)
                taken += [self._delivery(key, entry_id, fields, 1) for entry_id, fields in got]
                if len(got) < ask:
                    break
                continue
            still: list[str] = []
            done = 0
            while done < len(active) and len(taken) < count:
                # Never more streams in one read than turns still wanted: each gives <= 1.
                chunk = active[done : done + count - len(taken)]
                done += len(chunk)
                got_by_key = await self._read_one_each(chunk, consumer)
                for key in chunk:
                    got = got_by_key.get(key, [])
                    taken += [self._delivery(key, eid, fields, 1) for eid, fields in got]
                    if got:
                        still.append(key)
            active = still
        return taken

    async def _read_group(self, key: str, consumer: str, count: int) -> list[tuple[Any, Any]]:
        """New entries of `key` for `consumer`: [(entry id, fields)]."""
        if self._wire is None:
            reply = await self._client.xreadgroup(
                GROUP, consumer, {key: ">"}, count=count, noack=False
            )
            return [e for _, entries in reply or () for e in entries]
        raw = await self._wire.call(
            "XREADGROUP", "GROUP", GROUP, consumer, "COUNT", count, "STREAMS", key, ">"
        )
        return [
            (entry_id, _pairs(fields)) for _, entries in raw or () for entry_id, fields in entries
        ]

    async def _read_one_each(
        self, keys: list[str], consumer: str
    ) -> dict[str, list[tuple[Any, Any]]]:
        """At most one new entry of each stream: one XREADGROUP for all of them on a single
        server (one round trip per pass of the round-robin), one per stream on a Cluster."""
        if self._wire is None:
            return {key: await self._read_group(key, consumer, 1) for key in keys}
        raw = await self._wire.call(
            "XREADGROUP", "GROUP", GROUP, consumer, "COUNT", 1, "STREAMS", *keys,
            *([">"] * len(keys)),
        )  # fmt: skip
        return {
            _text(key): [(entry_id, _pairs(fields)) for entry_id, fields in entries]
            for key, entries in raw or ()
        }

    async def _reclaim(self, key: str, consumer: str, count: int) -> list[Delivery]:
        """Entries whose worker stopped touching them for `claim_after`: now `consumer`'s."""
        try:
            reply = await self._client.xautoclaim(
                key, GROUP, consumer, int(self.claim_after * 1000), "0-0", count=count
            )
        except rexc.ResponseError:  # no such stream or group (yet)
            return []
        claimed = reply[1]
        deliveries = []
        for entry_id, fields in claimed:
            if not fields:
                continue  # deleted meanwhile (acknowledged by its worker)
            deliveries.append(self._delivery(key, entry_id, fields, 2))
        return deliveries

    @staticmethod
    def _delivery(
        key: str, entry_id: bytes | str, fields: Any, attempt: int, *, marked: bool = False
    ) -> Delivery:
        turn = _decode(fields[b"j"] if b"j" in fields else fields["j"])
        alone = b"a" in fields or "a" in fields
        return Delivery(turn, f"{key} {_text(entry_id)}", attempt, alone, marked and alone)

    async def touch(self, consumer: str, deliveries: list[Delivery]) -> None:
        by_key: dict[str, list[str]] = {}
        for delivery in deliveries:
            key, entry_id = delivery.receipt.split(" ")
            by_key.setdefault(key, []).append(entry_id)
        try:
            for key, ids in by_key.items():
                await self._client.xclaim(key, GROUP, consumer, 0, ids, justid=True)
        except _FAILURES as exc:
            raise StoreUnavailable(f"redis queue: {exc}") from None

    async def ack(self, delivery: Delivery) -> None:
        key, entry_id = delivery.receipt.split(" ")
        turn = delivery.turn
        wire = self._wire
        if wire is not None:
            args = (key, entry_id, _queued_key(turn.session_id), turn.turn_id, turn.tenant or "-")
            if not self._acked and not wire.before_write(self._send_acks):
                await wire.evalsha(_ACK_SHA, _ACK_ONE_NODE, [TENANTS], list(args))  # connects
                return
            # With the others of this iteration, in its write (measured: one script and one
            # XACK + XDEL per stream for the turns a worker ends together, not per turn).
            acked = asyncio.get_running_loop().create_future()
            self._acks += args
            self._acked.append(acked)
            await acked
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.xack(key, GROUP, entry_id)
                pipe.xdel(key, entry_id)
                await pipe.execute()
            await self._client.hdel(_queued_key(turn.session_id), turn.turn_id)
        except _FAILURES as exc:
            raise StoreUnavailable(f"redis queue: {exc}") from None

    def ack_commands(self, delivery: Delivery) -> tuple[object, list[Command]] | None:
        wire = self._wire
        if wire is None:
            return None  # a Cluster: the keys are on other nodes than the session's
        key, entry_id = delivery.receipt.split(" ")
        turn = delivery.turn
        # As `_ACK_ONE_NODE` does for one turn: a tenant with nothing queued or running
        # leaves the round-robin's list.
        return wire, [
            ("XACK", key, GROUP, entry_id),
            ("XDEL", key, entry_id),
            ("HDEL", _queued_key(turn.session_id), turn.turn_id),
            ("XLEN", key),
            (IF_ZERO, "SREM", TENANTS, turn.tenant or "-"),
        ]

    def _send_acks(self) -> None:
        """Send this iteration's acknowledgements, one script (`RedisWire.before_write`)."""
        args, self._acks = self._acks, []
        waiting, self._acked = self._acked, []
        wire = self._wire

        def replied(reply: Any) -> None:
            if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
                task = asyncio.ensure_future(self._acks_again(args, waiting))
                self._retrying.add(task)
                task.add_done_callback(self._retrying.discard)
                return
            _settle(waiting, reply)

        sent = wire is not None and wire.call_nowait(
            "EVALSHA", _ACK_SHA, 1, TENANTS, *args, on_reply=replied
        )
        if not sent:
            _settle(waiting, StoreUnavailable("redis queue: not connected"))

    async def _acks_again(self, args: list[Any], waiting: list[asyncio.Future[None]]) -> None:
        """The script was not loaded (a restarted server): load it and send it again."""
        assert self._wire is not None
        try:
            reply = await self._wire.evalsha(_ACK_SHA, _ACK_ONE_NODE, [TENANTS], args)
        except (StoreUnavailable, RuntimeError) as exc:
            reply = exc
        _settle(waiting, reply)

    async def release(self, consumer: str, delivery: Delivery) -> None:
        key, entry_id = delivery.receipt.split(" ")
        idle = int(self.claim_after * 1000) + 1000
        try:
            await self._client.xclaim(key, GROUP, consumer, 0, [entry_id], idle=idle, justid=True)
            await self._client.lpush(WAKE, 1)
        except _FAILURES as exc:
            raise StoreUnavailable(f"redis queue: {exc}") from None

    async def earlier(self, delivery: Delivery) -> bool:
        _, entry_id = delivery.receipt.split(" ")
        if delivery.alone:
            # Nothing of its session was queued before it: only its own marker is read, to
            # find it withdrawn (cancelled, or its session deleted), unless the take read it
            # (as fresh: the read that took the turn, as this one would, is a round trip
            # before the worker's next command).
            if not delivery.marked:
                await self._check_marker(delivery, entry_id)
            return False
        ours = _entry_order(entry_id)
        try:
            if self._wire is not None:
                places = _pairs(
                    await self._wire.call("HGETALL", _queued_key(delivery.turn.session_id))
                )
            else:
                places = await self._client.hgetall(_queued_key(delivery.turn.session_id))
        except _FAILURES as exc:
            raise StoreUnavailable(f"redis queue: {exc}") from None
        found = False
        before = False
        for turn_id, place in places.items():
            if _text(turn_id) == delivery.turn.turn_id:
                found = _marks(place, entry_id)
            elif place and _entry_order(_text(place)) < ours:
                before = True
        if not found:
            raise Withdrawn(delivery.turn.turn_id)
        return before

    async def _check_marker(self, delivery: Delivery, entry_id: str) -> None:
        """Withdrawn unless the turn's marker names this entry ("" while a Cluster's enqueue
        places it)."""
        key, turn_id = _queued_key(delivery.turn.session_id), delivery.turn.turn_id
        try:
            if self._wire is not None:
                place = await self._wire.call("HGET", key, turn_id)
            else:
                place = await self._client.hget(key, turn_id)
        except _FAILURES as exc:
            raise StoreUnavailable(f"redis queue: {exc}") from None
        if not _marks(place, entry_id):
            raise Withdrawn(turn_id)

    async def cancel(self, session_id: str, turn_id: str) -> bool:
        queued = _queued_key(session_id)
        tenant = tenant_of(session_id) or "-"
        try:
            if self._wire is not None:
                removed = await self._wire.evalsha(
                    _CANCEL_SHA, _CANCEL_ONE_NODE,
                    [queued, stream_key(tenant_of(session_id)), TENANTS], [turn_id, tenant],
                )  # fmt: skip
                return bool(removed == 1)
            # A Cluster: the marker goes; the entry stays for a worker to find withdrawn (a
            # check of its pending state and a delete could race with a worker's take).
            await self._client.hdel(queued, turn_id)
        except _FAILURES as exc:
            raise StoreUnavailable(f"redis queue: {exc}") from None
        return False

    async def drop_session(self, session_id: str) -> list[str]:
        queued = _queued_key(session_id)
        tenant = tenant_of(session_id) or "-"
        try:
            if self._wire is not None:
                removed = await self._wire.evalsha(
                    _DROP_SHA, _DROP_ONE_NODE,
                    [queued, stream_key(tenant_of(session_id)), TENANTS], [tenant],
                )  # fmt: skip
                return [_text(t) for t in removed or ()]
            await self._client.delete(queued)  # a Cluster: as `cancel` does, one by one
        except _FAILURES as exc:
            raise StoreUnavailable(f"redis queue: {exc}") from None
        return []

    async def is_queued(self, session_id: str, turn_id: str) -> bool:
        try:
            return bool(await self._client.hexists(_queued_key(session_id), turn_id))
        except _FAILURES as exc:
            raise StoreUnavailable(f"redis queue: {exc}") from None

    async def stats(self) -> QueueStats:
        try:
            depth = 0
            since: dict[str, float] = {}
            for tenant in await self._tenants():
                key = stream_key(tenant)
                depth += await self._client.xlen(key)
                first = await self._client.xrange(key, count=1)
                if first:
                    since[tenant] = int(_text(first[0][0]).split("-", 1)[0]) / 1000
        except _FAILURES as exc:
            raise StoreUnavailable(f"redis queue: {exc}") from None
        now = time.time()
        ages = {tenant: max(0.0, now - at) for tenant, at in since.items()}
        return QueueStats(depth, max(ages.values(), default=0.0), ages)
