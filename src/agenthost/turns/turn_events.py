"""What a turn's stream carries besides text: a tool the agent called (`tool`: call id, name,
arguments and result) and a question for the human that ends the turn (`interrupt`: the
value the agent asked with). The engine hands an `EventSink` to the agent's `Turn`; the web
layer decodes the same structs, so every protocol carries the same fields.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import msgspec

__all__ = [
    "EventSink",
    "InterruptEvent",
    "ToolEvent",
    "decode_interrupt",
    "decode_tool",
    "encode_event",
]

EventSink = Callable[[Literal["tool", "interrupt"], bytes], None]
"""Publishes one non-text event of the turn (its JSON payload), after the text before it."""


class ToolEvent(msgspec.Struct):
    """A tool call and its result: `arguments` as the model gave them (a JSON value),
    `result` as the tool returned it (text, or any JSON value)."""

    call_id: str
    name: str
    arguments: Any
    result: Any


class InterruptEvent(msgspec.Struct):
    """The agent stopped to ask the human: `value` is what it asked with (any JSON value);
    the next turn's message is the answer. `id` names the interrupt where the framework does."""

    value: Any
    id: str | None = None


def _jsonable(value: Any) -> Any:
    """What a tool's arguments or result become when JSON has no type for them: a pydantic
    model its `model_dump`, anything else its text."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    return str(value)


_encoder = msgspec.json.Encoder(enc_hook=_jsonable)


def encode_event(event: ToolEvent | InterruptEvent) -> bytes:
    """The event's JSON payload; values JSON cannot hold are turned into ones it can."""
    return _encoder.encode(event)


_tool = msgspec.json.Decoder(ToolEvent)
_interrupt = msgspec.json.Decoder(InterruptEvent)


def decode_tool(data: bytes) -> ToolEvent:
    """The `tool` event in `data`."""
    return _tool.decode(data)


def decode_interrupt(data: bytes) -> InterruptEvent:
    """The `interrupt` event in `data`."""
    return _interrupt.decode(data)
