"""The simulated model's tool calls: when a request offers tools and its newest message is
the user's and names one of them, the model answers with a call of that tool instead of
text; once the tool's result is in the prompt, it answers with text that quotes it.

Deterministic, so tests need no real model: the same prompt and tools give the same call,
with the same call id. The arguments are the JSON object written after the tool's name in
the message (`call get_weather {"city": "Paris"}`), else built from the tool's JSON schema:
each required string property gets the text after the name (or the whole message), each
number 1, each boolean true.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

__all__ = ["SimToolCall", "tool_call_for", "tool_results_of"]


class SimToolCall(msgspec.Struct, frozen=True):
    """A call the simulated model makes: OpenAI's `tool_calls[i]` without the nesting."""

    id: str
    name: str
    arguments: str
    """The arguments as a JSON object in text, as OpenAI's API carries them."""


_SCHEMA_VALUES: dict[str, Any] = {"integer": 1, "number": 1, "boolean": True}


def _tool_names(tools: Sequence[Mapping[str, Any]]) -> list[tuple[str, Mapping[str, Any]]]:
    named: list[tuple[str, Mapping[str, Any]]] = []
    for tool in tools:
        function = tool.get("function") if tool.get("type", "function") == "function" else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            parameters = function.get("parameters")
            named.append((function["name"], parameters if isinstance(parameters, Mapping) else {}))
    return named


def _arguments(rest: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    stripped = rest.strip()
    if stripped.startswith("{"):
        try:
            value, _ = json.JSONDecoder().raw_decode(stripped)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return value
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return {}
    required = schema.get("required")
    names = required if isinstance(required, list) else list(properties)
    out: dict[str, Any] = {}
    for name in names:
        spec = properties.get(name)
        kind = spec.get("type") if isinstance(spec, Mapping) else None
        out[name] = _SCHEMA_VALUES.get(kind, stripped) if isinstance(kind, str) else stripped
    return out


def tool_call_for(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None
) -> SimToolCall | None:
    """The call the model makes for this prompt, or None (it answers with text): only when
    tools are offered, the newest message is the user's, and it names one of the tools
    (the first named, in the message's order)."""
    if not tools or not messages or messages[-1].get("role") != "user":
        return None
    text = str(messages[-1].get("content") or "")
    best: tuple[int, str, Mapping[str, Any]] | None = None
    for name, schema in _tool_names(tools):
        match = re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text)
        if match is not None and (best is None or match.start() < best[0]):
            best = (match.start(), name, schema)
    if best is None:
        return None
    start, name, schema = best
    arguments = json.dumps(_arguments(text[start + len(name) :], schema), sort_keys=True)
    digest = hashlib.blake2b(f"{len(messages)}\x00{text}\x00{name}".encode(), digest_size=8)
    return SimToolCall(f"call_{digest.hexdigest()}", name, arguments)


def tool_results_of(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    """The tool results given since the newest user message, oldest first."""
    results: list[str] = []
    for message in reversed(messages):
        role = message.get("role")
        if role == "user":
            break
        if role == "tool":
            results.append(str(message.get("content") or ""))
    results.reverse()
    return results
