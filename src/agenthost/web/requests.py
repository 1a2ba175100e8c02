"""Reading a request: its body (bounded while it arrives), its JSON decoded into the route's
msgspec type, and its numbers (query parameters, `Last-Event-ID`). Every failure is a 4xx
`AgentHostError` saying what was wrong, never a 500."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from agenthost.core.errors import (
    BadRequest,
    InvalidJSON,
    JSONTooDeep,
    PayloadTooLarge,
    ValidationFailed,
)
from agenthost.core.ids import check_turn_id

__all__ = [
    "AFTER_SCHEMA",
    "LAST_EVENT_ID_SCHEMA",
    "MAX_BEFORE",
    "BodyDecoder",
    "event_number",
    "idempotency_key",
    "int_query",
    "read_body",
    "request_body",
    "single_query",
    "watch_disconnect",
]

T = TypeVar("T")

# What the server accepts, stated once for the handlers and the OpenAPI document.
MAX_BEFORE = 2**62
_MAX_EVENT_DIGITS = 18  # any number below 10**18: more events than a turn can have
_EVENT_NUMBER = re.compile(f"[0-9]{{1,{_MAX_EVENT_DIGITS}}}")
LAST_EVENT_ID_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": f"^[0-9]{{0,{_MAX_EVENT_DIGITS}}}$",  # empty: no event yet
}
AFTER_SCHEMA: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": 10**18 - 1}


class BodyDecoder:
    """A cached msgspec decoder that maps failures to 400 (bad JSON) or 422 (bad field)."""

    def __init__(self, typ: type[Any]) -> None:
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(typ)

    def __call__(self, body: bytes) -> Any:
        try:
            return self._decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise ValidationFailed(str(exc)) from None
        except msgspec.DecodeError as exc:
            raise InvalidJSON(f"the body is not valid JSON: {exc}") from None
        except RecursionError:
            raise JSONTooDeep("the body's JSON nests too deeply") from None


async def read_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
        if size > limit:
            raise PayloadTooLarge(f"the body is {size} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        if chunk:
            total += len(chunk)
            if total > limit:
                raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def request_body(request: Request, limit: int) -> bytes:
    """A Starlette request's body, bounded as `read_body` bounds it."""
    return await read_body(request.receive, request.headers.get("content-length"), limit)


def event_number(raw: str | None) -> int:
    """`Last-Event-ID` (or `?after=`): the last event number the client has, 0 for none."""
    if not raw:
        return 0
    # ASCII digits only: int() would also take " 7", "+7", "7_0" and other scripts' digits.
    if not _EVENT_NUMBER.fullmatch(raw):
        raise ValidationFailed(
            f"Last-Event-ID must be an event number (0-{_MAX_EVENT_DIGITS} digits)"
        )
    return int(raw)


def idempotency_key(request: Request) -> str | None:
    """The request's `Idempotency-Key` (a valid turn id), if it sent one."""
    key = request.headers.get("idempotency-key")
    return None if key is None else check_turn_id(key)


def single_query(request: Request, name: str) -> str | None:
    """Query parameter `name`, if given; given twice (`?limit=1&limit=2`) is a 422."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise ValidationFailed(f"query parameter {name} is given more than once")
    return values[0] if values else None


def int_query(request: Request, name: str, default: T, low: int, high: int) -> int | T:
    """Query parameter `name` as an integer in [low, high] (422 otherwise), or `default`."""
    raw = single_query(request, name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationFailed(f"query parameter {name} must be an integer") from None
    if not low <= value <= high:
        raise ValidationFailed(f"query parameter {name} must be between {low} and {high}")
    return value


def watch_disconnect(receive: Receive, on_gone: Callable[[], None]) -> asyncio.Task[None]:
    """A task that calls `on_gone` when the client disconnects; cancel it once the answer is
    sent. (The request's body must have been read: this consumes what `receive` gives.)"""

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        on_gone()

    return asyncio.ensure_future(watch())
