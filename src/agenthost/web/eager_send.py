"""Running an ASGI `send` to its end without a task, when it does not have to wait.

A send to a connection whose socket takes the bytes at once (uvicorn's HTTP and WebSocket
protocols write to the transport and return) never suspends. Driving that coroutine by hand
from the code that published a chunk delivers the chunk with no task woken for it. When the
send does suspend (the socket's buffer is full: the client reads slowly), what is left of it
is handed back as an awaitable for a task to finish; the caller then sends nothing else on
that connection until it is done, so order is kept.
"""

from __future__ import annotations

from collections.abc import Awaitable, Coroutine, Generator
from types import CoroutineType
from typing import Any

__all__ = ["send_eagerly"]


def send_eagerly(send: Awaitable[None]) -> Awaitable[None] | None:
    """Run `send` until it ends (None) or first suspends (the rest of it, to be awaited).

    An exception it raises before suspending is raised here. An awaitable that is not a
    coroutine is handed back as it is."""
    if type(send) is not CoroutineType:
        return send
    try:
        suspended_on = send.send(None)
    except StopIteration:
        return None
    return _Rest(send, suspended_on)


class _Rest:
    """A coroutine that has already run up to its first suspension, as an awaitable: the
    task that awaits it passes on what the coroutine waits for, as `await` itself would."""

    __slots__ = ("_coroutine", "_suspended_on")

    def __init__(self, coroutine: Coroutine[Any, Any, None], suspended_on: Any) -> None:
        self._coroutine = coroutine
        self._suspended_on = suspended_on

    def __await__(self) -> Generator[Any, Any, None]:
        coroutine = self._coroutine
        suspended_on = self._suspended_on
        while True:
            try:
                value = yield suspended_on
            except GeneratorExit:
                coroutine.close()
                raise
            except BaseException as exc:  # e.g. the awaiting task was cancelled
                try:
                    suspended_on = coroutine.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    suspended_on = coroutine.send(value)
                except StopIteration:
                    return
