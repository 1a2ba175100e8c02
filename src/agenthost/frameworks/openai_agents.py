"""An OpenAI Agents SDK `Agent` as an agenthost agent: `agenthost serve mybot:agent`.

Each turn is `Runner.run_streamed(agent, message, session=...)`: the model's text deltas
become chunks, each `tool_called` / `tool_output` pair a `tool` event. The agent's memory is
an Agents SDK `Session` over the session's agent state (`HistorySession`): the items the SDK
keeps (messages, tool calls and their outputs) are loaded when the turn starts and saved
with the turn's commit, under the same fence, so a turn that fails or dies adds none of them.

An agent without a model gets the LLM `--llm` configures (Chat Completions on that base
URL, or the in-process simulator for `sim://`); one whose model is a name is run through the
same client; one that brings a `Model` object keeps it.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from agenthost.frameworks.base import (
    FrameworkLLM,
    FrameworkRunner,
    HostedTurn,
    TextSink,
    answer_text,
)

__all__ = ["HistorySession", "is_agent", "openai_agents_runner"]

_encode = msgspec.json.encode
_decode = msgspec.json.decode


def is_agent(obj: object) -> bool:
    """An Agents SDK `Agent`, recognised without importing the SDK."""
    return any(
        cls.__module__ == "agents.agent" and cls.__name__ == "Agent" for cls in type(obj).__mro__
    )


class HistorySession:
    """An Agents SDK `Session` whose items live in the agenthost session's agent state: read
    from the state the turn started with, written back with the turn's commit."""

    def __init__(self, session_id: str, items: list[Any]) -> None:
        self.session_id = session_id
        self.session_settings: Any = None
        self.items = items

    @classmethod
    def from_state(cls, session_id: str, state: bytes | None) -> HistorySession:
        return cls(session_id, _decode(state) if state else [])

    def to_state(self) -> bytes:
        return _encode(self.items)

    async def get_items(self, limit: int | None = None) -> list[Any]:
        return list(self.items if limit is None else self.items[-limit:] if limit else [])

    async def add_items(self, items: list[Any]) -> None:
        # Items are pydantic models or dicts: keep them as plain JSON, as they are stored.
        self.items.extend(json.loads(json.dumps(items, default=_plain)))

    async def pop_item(self) -> Any | None:
        return self.items.pop() if self.items else None

    async def clear_session(self) -> None:
        self.items.clear()


def _plain(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if dump is not None:
        return dump(exclude_unset=True)
    raise TypeError(f"cannot store {type(value).__name__} in the session")


def openai_agents_runner(agent: Any, llm: FrameworkLLM) -> FrameworkRunner:
    """Wrap an Agents SDK `Agent` (see the module docstring for the model it runs on)."""
    from agents import RunConfig, Runner
    from agents.models.interface import Model
    from agents.models.openai_provider import OpenAIProvider

    own_model = isinstance(agent.model, Model)
    config = RunConfig(tracing_disabled=True)
    if not own_model:
        provider = OpenAIProvider(openai_client=llm.openai_client(), use_responses=False)
        model = None if isinstance(agent.model, str) else llm.model_name
        config = RunConfig(model=model, model_provider=provider, tracing_disabled=True)

    async def run(turn: HostedTurn, sink: TextSink | None) -> str:
        session = HistorySession.from_state(turn.session_id, turn.state)
        result = Runner.run_streamed(agent, turn.message, session=session, run_config=config)
        calls: dict[str, Any] = {}
        async for event in result.stream_events():
            if event.type == "raw_response_event":
                data: Any = event.data
                if sink is not None and getattr(data, "type", "") == "response.output_text.delta":
                    sink(data.delta)
            elif event.type == "run_item_stream_event":
                raw: Any = event.item.raw_item
                if event.name == "tool_called":
                    call_id = getattr(raw, "call_id", None)
                    if call_id is not None:
                        calls[call_id] = raw
                elif event.name == "tool_output":
                    call_id = raw.get("call_id") if isinstance(raw, dict) else None
                    call = calls.get(call_id or "")
                    if call_id is not None and call is not None:
                        turn.tool(call_id, call.name, _arguments(call.arguments), event.item.output)
        turn.save_state(session.to_state())
        return answer_text(result.final_output)

    return run


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
