"""`agenthost.testing`: an agent of any shape runs for a few turns in process against the
simulated LLM, with its chunks, tool events, interrupts and state between turns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agenthost import Turn
from agenthost.frameworks.base import answer_text
from agenthost.testing import AgentSession, run_turns

EXAMPLES = str(Path(__file__).resolve().parent.parent / "examples")


async def simple(turn: Turn) -> str:
    turn.metadata["seen"] = turn.metadata.get("seen", 0) + 1
    return f"{turn.message} #{turn.metadata['seen']}"


async def generator(turn: Turn) -> AsyncIterator[str]:
    yield "a"
    turn.tool("c1", "lookup", {"q": turn.message}, [1, 2])
    yield "b"


async def call_agent(messages: list[dict[str, str]], metadata: dict[str, Any]) -> str:
    return f"{len(messages)} messages"


async def test_the_three_plain_shapes_run_turn_after_turn() -> None:
    assert [r.text for r in await run_turns(simple, ["x", "y"])] == ["x #1", "y #2"]
    [reply] = await run_turns(generator, ["q"])
    assert reply.text == "ab" and reply.chunks == ["a", "b"]
    assert [(t.call_id, t.name, t.arguments, t.result) for t in reply.tools] == [
        ("c1", "lookup", {"q": "q"}, [1, 2])
    ]
    assert [r.text for r in await run_turns(call_agent, ["1", "2"])] == ["1 messages", "3 messages"]


async def test_a_session_keeps_its_history_and_a_plain_client_gets_no_events() -> None:
    async with AgentSession(generator, stream=False) as session:
        reply = await session.send("q")
        assert reply.text == "ab" and reply.chunks == [] and reply.tools == []
        assert [m.role for m in await session.messages()] == ["user", "assistant"]


@pytest.mark.parametrize(
    "spec",
    ["langgraph_agent:graph", "openai_agents_agent:agent", "pydantic_ai_agent:agent"],
)
async def test_framework_agents_call_their_tool_in_process(spec: str) -> None:
    async with AgentSession(spec, app_dir=EXAMPLES, llm="sim://?words=3") as session:
        first = await session.send("get_weather Oslo")
        assert [(t.name, t.arguments, t.result) for t in first.tools] == [
            ("get_weather", {"city": "Oslo"}, "sunny in Oslo")
        ]
        assert first.text.startswith("sim: get_weather Oslo | tool: sunny in Oslo | ")
        assert "".join(first.chunks) == first.text
        second = await session.send("thanks")
        assert second.text.startswith("sim: thanks | ") and second.tools == []


async def test_a_langgraph_interrupt_is_answered_by_the_next_turn() -> None:
    async with AgentSession("langgraph_agent:graph", app_dir=EXAMPLES) as session:
        asked = await session.send("ask_human which city?")
        assert asked.interrupt is not None and asked.interrupt.value == "which city?"
        answered = await session.send("Lima")
        assert answered.interrupt is None
        assert [t.result for t in answered.tools] == ["the human said Lima"]


async def test_an_agent_that_brings_its_own_model_keeps_it() -> None:
    from agents import Agent, OpenAIChatCompletionsModel
    from pydantic_ai import Agent as PydanticAgent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    from agenthost.frameworks import FrameworkLLM

    own = FrameworkLLM("sim://?words=1")  # one word after the echo; --llm gives five
    client = own.openai_client()
    agents_sdk = Agent(name="own", model=OpenAIChatCompletionsModel("own", client))
    pydantic = PydanticAgent(OpenAIChatModel("own", provider=OpenAIProvider(openai_client=client)))
    for agent in (agents_sdk, pydantic):
        [mine] = await run_turns(agent, ["hi"], llm="sim://?words=5")
        assert len(mine.text.split(" | ")[1].split()) == 1, mine.text
    for agent in (Agent(name="configured"), PydanticAgent()):
        [configured] = await run_turns(agent, ["hi"], llm="sim://?words=5")
        assert len(configured.text.split(" | ")[1].split()) == 5, configured.text


async def test_tool_values_and_outputs_json_cannot_hold_are_converted() -> None:
    from pydantic import BaseModel

    class Forecast(BaseModel):
        city: str
        degrees: int

    class Opaque:
        def __str__(self) -> str:
            return "opaque"

    async def agent(turn: Turn) -> str:
        turn.tool("c1", "forecast", {"at": Opaque()}, Forecast(city="Oslo", degrees=3))
        return "done"

    [reply] = await run_turns(agent, ["q"])
    [tool] = reply.tools
    assert tool.arguments == {"at": "opaque"}
    assert tool.result == {"city": "Oslo", "degrees": 3}

    # A run's structured output becomes the turn's answer as JSON.
    assert answer_text(Forecast(city="Rome", degrees=20)) == '{"city":"Rome","degrees":20}'
    assert answer_text({"a": [1, Opaque()]}) == '{"a": [1, "opaque"]}'
