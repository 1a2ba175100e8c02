"""The echo-like agents `benchmarks/framework_cpu.py` serves beside the LangGraph graph
(`benchmarks/echo_langgraph.py`): one model call, no tool, written plainly, with the OpenAI
Agents SDK and with Pydantic AI."""

from __future__ import annotations

from agents import Agent
from pydantic_ai import Agent as PydanticAgent

from agenthost import Turn


async def plain(turn: Turn) -> str:
    return await turn.llm.complete(turn.messages())


openai_agent = Agent(name="echo", instructions="Echo.")
pydantic_agent = PydanticAgent(instructions="Echo.")
