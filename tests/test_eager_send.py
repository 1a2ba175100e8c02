"""`send_eagerly`: a send that need not wait runs to its end without a task; one that must
wait is finished by whoever awaits what is left of it, exceptions and cancellation included."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from agenthost.web.eager_send import send_eagerly


async def test_a_send_that_does_not_wait_is_done_before_the_call_returns() -> None:
    sent: list[str] = []

    async def send(message: str) -> None:
        sent.append(message)

    assert send_eagerly(send("hello")) is None
    assert sent == ["hello"]


async def test_a_send_that_waits_is_finished_by_awaiting_its_rest() -> None:
    gate = asyncio.get_running_loop().create_future()
    sent: list[str] = []

    async def send(message: str) -> None:
        sent.append("started")
        await gate  # the socket's buffer is full
        sent.append(message)

    rest = send_eagerly(send("late"))
    assert rest is not None and sent == ["started"]
    finisher = asyncio.ensure_future(_await(rest))
    await asyncio.sleep(0)
    assert not finisher.done()
    gate.set_result(None)
    await asyncio.wait_for(finisher, 2)
    assert sent == ["started", "late"]


async def test_a_failure_before_waiting_is_raised_by_the_call() -> None:
    async def send() -> None:
        raise ConnectionResetError("gone")

    with pytest.raises(ConnectionResetError):
        send_eagerly(send())


async def test_a_failure_after_waiting_is_raised_by_the_await() -> None:
    gate = asyncio.get_running_loop().create_future()

    async def send() -> None:
        await gate
        raise ConnectionResetError("gone")

    rest = send_eagerly(send())
    assert rest is not None
    gate.set_result(None)
    with pytest.raises(ConnectionResetError):
        await rest


async def test_cancelling_the_awaiting_task_cancels_the_send() -> None:
    cancelled = asyncio.Event()
    gate = asyncio.get_running_loop().create_future()

    async def send() -> None:
        try:
            await gate
        except asyncio.CancelledError:
            cancelled.set()
            raise

    rest = send_eagerly(send())
    assert rest is not None
    task = asyncio.ensure_future(_await(rest))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()


async def test_an_awaitable_that_is_not_a_coroutine_is_handed_back() -> None:
    future = asyncio.get_running_loop().create_future()
    assert send_eagerly(future) is future


async def _await(rest: Awaitable[None]) -> None:
    await rest
