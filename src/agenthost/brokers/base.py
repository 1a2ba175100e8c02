"""The stream broker contract: a turn's events, numbered from 1, kept `stream_ttl` seconds
after the turn ends, read from any sequence number onwards.

A turn run again after its process died goes on in the same stream: a `reset` event (the
text so far is void), then the new attempt's chunks, numbers still rising."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal, Protocol, runtime_checkable

import msgspec

from agenthost.connections.redis_commands import Command

__all__ = ["Emit", "EventKind", "PushableEvents", "StreamBroker", "StreamEvent", "forward"]

EventKind = Literal["chunk", "tool", "interrupt", "reset", "done", "error"]


class StreamEvent(msgspec.Struct, frozen=True):
    """One event of a turn's stream; `data` is its JSON payload. `done` and `error` end it."""

    seq: int
    kind: EventKind
    data: bytes

    @property
    def final(self) -> bool:
        return self.kind == "done" or self.kind == "error"


Emit = Callable[[StreamEvent], Awaitable[None] | None]
"""Sends one event to a client: None once it is sent, or an awaitable that finishes sending
it (the client reads slowly; nothing more is sent to it until that is done)."""


@runtime_checkable
class PushableEvents(Protocol):
    """Events a broker can hand to the consumer as they are published (a stream this process
    publishes), so no task wakes per event."""

    def push(self, emit: Emit) -> Awaitable[None]: ...


async def forward(events: AsyncIterator[StreamEvent], emit: Emit) -> None:
    """Send each event with `emit` until the events end: pushed by the publisher where the
    broker can, read one by one otherwise."""
    if isinstance(events, PushableEvents):
        await events.push(emit)
        return
    async for event in events:
        rest = emit(event)
        if rest is not None:
            await rest


@runtime_checkable
class StreamBroker(Protocol):
    @property
    def inbox(self) -> str:
        """This process's address for turn endings (`notify_end`): a queued plain turn names
        it, so the worker that ends the turn tells this process, and no other
        (`brokers.endings`)."""
        ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def start(self, session_id: str, turn_id: str) -> None:
        """Announce a stream this process is about to publish (readers may come first)."""
        ...

    async def exists(self, session_id: str, turn_id: str) -> bool:
        """Whether the stream is known here or (for shared brokers) anywhere."""
        ...

    async def last(self, session_id: str, turn_id: str) -> StreamEvent | None:
        """The newest event of the stream, here or (for shared brokers) anywhere."""
        ...

    def publish_nowait(self, session_id: str, turn_id: str, event: StreamEvent) -> bool:
        """Publish `event` at once if this backend can do it without waiting (in-process);
        False (and nothing done) means: call `publish`."""
        ...

    async def publish(self, session_id: str, turn_id: str, event: StreamEvent) -> None:
        """Append `event` (the publisher numbers events 1, 2, ... in order)."""
        ...

    async def forget(self, session_id: str, turn_id: str | None = None) -> None:
        """Delete the stream of `turn_id`, or every ended stream of the session (None; a
        running one is its publisher's to delete once it has published its end, so that
        its readers, here or elsewhere, get that end): here and, for shared brokers,
        wherever it is stored (a reader elsewhere that finds the stream gone before its
        final event ends with an `interrupted` error). Readers of a deleted stream here
        end."""
        ...

    def drop_stale(self, session_id: str, turn_id: str) -> None:
        """A turn with no record is starting under `turn_id`: drop this process's copy of
        a finished stream of that id (left by a deleted session), so it is not replayed."""
        ...

    def expect_end(self, session_id: str, turn_id: str) -> asyncio.Future[StreamEvent]:
        """A future for the turn's final event as sent to this process's `inbox`; ask for it
        before the turn is queued. Cancel it to stop waiting (nothing of it stays)."""
        ...

    def notify_end(self, inbox: str, session_id: str, turn_id: str, event: StreamEvent) -> None:
        """Send the turn's final `event` to the process whose inbox is `inbox`: one message,
        however many events the turn had. Best effort, never raises: a waiter that misses it
        falls back to the turn's record."""
        ...

    def ending_commands(
        self, inbox: str, session_id: str, turn_id: str, event: StreamEvent
    ) -> tuple[object, list[Command]] | None:
        """`notify_end` as Redis commands, with the client they are meant for (a Redis
        server's shared pipelining client), for another part to run in a step of its own on
        that server (a commit's script); None where it cannot be sent so (an inbox of this
        process, a broker not on Redis: call `notify_end`)."""
        ...

    def read(
        self, session_id: str, turn_id: str, after: int, wait: float
    ) -> AsyncIterator[StreamEvent]:
        """Events with seq > `after`, waiting for new ones, until a final event. Ends
        without a final event if nothing new arrives for `wait` seconds (the publisher died
        or the stream is unknown). What it returns may also be `PushableEvents`; `forward`
        uses that."""
        ...
