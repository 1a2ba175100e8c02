"""Group commit for the PostgreSQL store: one statement for every turn step that waited.

A `Batcher` sends a call alone when none of its kind is in flight, so a lone turn goes
at once and its latency is what it was. While one is in flight, further calls queue; the
moment it returns, every queued call goes as ONE statement (`many`, a set-returning
server-side function over arrays: `stores/migrations/0008_batched_turn_steps.sql`), and
each caller gets its own row's outcome. No timer: a batch is whatever arrived during the
previous round trip, so batches grow with load and vanish without it. Per-statement and
per-transaction costs (parse/bind, executor start, the commit record and its WAL flush, a
backend's wake-up, the round trip, asyncpg's call overhead) are paid once per batch.

`linger` (the store's `?batch_linger=`, 2): a call that finds nothing in flight first lets
the event loop run what is ready now, one pass and then another while calls keep joining
(at most `linger` more), and leaves with those calls. Without it, turns in flight together
fell into step: when a batch returned, the first of the next wave went alone and the rest
queued behind it, so half the statements carried one turn (`benchmarks/turn_cpu.py`,
PostgreSQL at history 5: 0.26 statements per turn, about 0.19 with it). A lone call waits one
pass of the loop: microseconds, still no timer.

Guarantees: a caller's result is delivered only after its statement returned, so after
PostgreSQL committed it (an acknowledged turn is committed). A batch that PostgreSQL
refused as a whole for something in its data (an error it answered with: the transaction
rolled back, nothing of any row written) is sent again one call per row, so one bad row
fails only itself. A batch that failed because PostgreSQL is unreachable, shutting down
or cut the connection (its outcome unknown to the caller) fails every caller with that
error, exactly as each call alone would have: every row is then retryable, and the fenced,
idempotent steps make a retry commit once.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Batcher"]

A = TypeVar("A")
R = TypeVar("R")

MAX_BATCH = 256
"""Rows per statement at most: bounds a statement's size and the time its row locks are
held; a longer queue goes in several batches."""


class Batcher(Generic[A, R]):
    """Runs `one(args)` for a lone call and `many([args, ...])` (a result per call, in order)
    for the calls that queued while `in_flight` statements were already running.

    `refused(exc)`: whether a failure of `many` means the server refused the statement (so
    nothing of it was written: its rows are sent again one by one), rather than that its
    outcome is unknown (every caller gets the failure)."""

    def __init__(
        self,
        one: Callable[[A], Awaitable[R]],
        many: Callable[[Sequence[A]], Awaitable[Sequence[R]]],
        *,
        refused: Callable[[BaseException], bool] = lambda _exc: False,
        in_flight: int = 1,
        max_batch: int = MAX_BATCH,
        min_many: int = 2,
        linger: int = 0,
    ) -> None:
        self._one = one
        self._refused = refused
        self._many = many
        self.in_flight = max(1, in_flight)
        self.max_batch = max(1, max_batch)
        self.min_many = max(1, min_many)
        """Calls sent together at least, for `many` to be used (1: even a lone call, as a
        batch of one; what the conformance suite runs the batch functions with)."""
        self.linger = max(0, linger)
        """Event-loop passes a call that finds nothing in flight may wait for others to
        join it (0: it is sent at once)."""
        self._linger_passes = -1  # >= 0 while a batch lingers
        self._seen = 0
        self._running = 0
        self._queue: collections.deque[tuple[A, asyncio.Future[R]]] = collections.deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self.sizes: collections.Counter[int] = collections.Counter()
        """Statements sent, by how many calls each carried (1: alone)."""

    @property
    def queued(self) -> int:
        """Calls waiting for the next batch."""
        return len(self._queue)

    async def submit(self, args: A) -> R:
        """The outcome of `args`'s call, sent alone or in the next batch."""
        if self.linger and self._running < self.in_flight and not self._queue:
            # Nothing in flight: the call waits while the event loop runs what is ready
            # (see `linger`), then leaves with whatever joined it.
            self._linger_passes = 0
            self._seen = 1
            asyncio.get_running_loop().call_soon(self._flush)
        elif self._running < self.in_flight and not self._queue and not self._lingering:
            self._running += 1
            self.sizes[1] += 1
            try:
                if self.min_many > 1:
                    return await self._one(args)
                future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
                await self._send_many([(args, future)])
                return future.result()
            finally:
                self._running -= 1
                self._next()
        queued: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((args, queued))
        # A caller cancelled while queued leaves a cancelled future: skipped when sent. Once
        # sent, its step goes on (as a call cancelled mid-flight may have reached the server).
        return await queued

    @property
    def _lingering(self) -> bool:
        return self._linger_passes >= 0

    def _flush(self) -> None:
        """Send the lingering batch once a pass of the event loop added nothing to it (or
        after `linger` passes)."""
        grown = len(self._queue) > self._seen
        self._seen = len(self._queue)
        if grown and self._linger_passes < self.linger:
            self._linger_passes += 1
            asyncio.get_running_loop().call_soon(self._flush)
            return
        self._linger_passes = -1
        self._next()

    def _next(self) -> None:
        """Send what queued, if a statement may start now."""
        if self._lingering:
            return
        while self._queue and self._running < self.in_flight:
            batch: list[tuple[A, asyncio.Future[R]]] = []
            while self._queue and len(batch) < self.max_batch:
                item = self._queue.popleft()
                if not item[1].done():
                    batch.append(item)
            if not batch:
                return
            self._running += 1
            task = asyncio.create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[A, asyncio.Future[R]]]) -> None:
        try:
            if len(batch) < self.min_many:  # too few to batch: each alone, side by side
                self.sizes[1] += len(batch)
                await asyncio.gather(*(_settle(f, self._one(a)) for a, f in batch))
            else:
                self.sizes[len(batch)] += 1
                await self._send_many(batch)
        finally:
            self._running -= 1
            self._next()

    async def _send_many(self, batch: list[tuple[A, asyncio.Future[R]]]) -> None:
        try:
            results = await self._many([args for args, _ in batch])
        except BaseException as exc:
            if self._refused(exc):
                # Refused as a whole, so nothing of it was written: each row alone, so the
                # row at fault fails by itself.
                self.sizes[1] += len(batch)
                await asyncio.gather(*(_settle(f, self._one(a)) for a, f in batch))
                return
            for _, future in batch:
                _fail(future, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def close(self) -> None:
        """Wait for the batches in flight (their callers get their outcomes)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _fail(future: asyncio.Future[R], exc: BaseException) -> None:
    if future.done():
        return
    if isinstance(exc, Exception):
        future.set_exception(exc)
    else:  # the batch itself was cancelled (the store closing): so are its callers
        future.cancel()


async def _settle(future: asyncio.Future[R], call: Awaitable[R]) -> None:
    try:
        result = await call
    except BaseException as exc:
        _fail(future, exc)
        if not isinstance(exc, Exception):
            raise
        return
    if not future.done():
        future.set_result(result)
