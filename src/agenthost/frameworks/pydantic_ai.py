"""A Pydantic AI `Agent` as an agenthost agent: `agenthost serve mybot:agent`.

Each turn is the agent's streamed run (`run_stream_events`) with the session's message
history: text parts become chunks, each function tool's call and result a `tool` event. The
history (Pydantic AI's `ModelMessage`s, tool calls and returns included) is the session's
agent state: loaded when the turn starts, saved with the turn's commit under the same fence,
so a turn that fails or dies adds nothing to it.

An agent without a model gets the LLM `--llm` configures (an `OpenAIChatModel` on that
base URL, or the in-process simulator for `sim://`); one that has a model keeps it.
"""

from __future__ import annotations

from typing import Any

from agenthost.frameworks.base import (
    FrameworkLLM,
    FrameworkRunner,
    HostedTurn,
    TextSink,
    answer_text,
)

__all__ = ["is_agent", "pydantic_ai_runner"]


def is_agent(obj: object) -> bool:
    """A Pydantic AI `Agent`, recognised without importing Pydantic AI."""
    return any(
        cls.__module__.startswith("pydantic_ai.agent") and cls.__name__ == "Agent"
        for cls in type(obj).__mro__
    )


def pydantic_ai_runner(agent: Any, llm: FrameworkLLM) -> FrameworkRunner:
    """Wrap a Pydantic AI `Agent` (see the module docstring for the model it runs on)."""
    from pydantic_ai.messages import (
        FunctionToolCallEvent,
        FunctionToolResultEvent,
        ModelMessagesTypeAdapter,
        PartDeltaEvent,
        PartStartEvent,
        TextPart,
        TextPartDelta,
    )
    from pydantic_ai.run import AgentRunResultEvent

    model: Any = None
    if agent.model is None:
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider

        provider = OpenAIProvider(openai_client=llm.openai_client())
        model = OpenAIChatModel(llm.model_name, provider=provider)

    async def run(turn: HostedTurn, sink: TextSink | None) -> str:
        history = ModelMessagesTypeAdapter.validate_json(turn.state) if turn.state else []
        calls: dict[str, Any] = {}
        output: Any = ""
        async with agent.run_stream_events(
            turn.message, message_history=history, model=model
        ) as events:
            async for event in events:
                text = None
                if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
                    text = event.part.content
                elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
                    text = event.delta.content_delta
                elif isinstance(event, FunctionToolCallEvent):
                    calls[event.part.tool_call_id] = event.part
                elif isinstance(event, FunctionToolResultEvent):
                    part = event.part
                    call = calls.get(part.tool_call_id)
                    arguments = call.args_as_dict() if call is not None else {}
                    turn.tool(part.tool_call_id, part.tool_name, arguments, part.content)
                elif isinstance(event, AgentRunResultEvent):
                    output = event.result.output
                    turn.save_state(ModelMessagesTypeAdapter.dump_json(event.result.all_messages()))
                if text and sink is not None:
                    sink(text)
        return answer_text(output)

    return run
