"""Agents written with a framework, hosted as they are: a compiled LangGraph graph, an
OpenAI Agents SDK `Agent` or a Pydantic AI `Agent`, recognised by type. A framework is
imported only when the agent is one of its objects (which means it is installed: the object
exists), so agenthost runs without any of them (`agenthost[langgraph]`,
`agenthost[openai-agents]`, `agenthost[pydantic-ai]` install them).
"""

from __future__ import annotations

from agenthost.frameworks.base import FrameworkLLM, FrameworkRunner, HostedTurn

__all__ = ["FrameworkLLM", "FrameworkRunner", "HostedTurn", "configure", "framework_runner"]


def configure(llm: FrameworkLLM) -> None:
    """Hand `llm` to the helpers agents call at import time (`langgraph.chat_model()`)."""
    from agenthost.frameworks import langgraph

    langgraph.configure(llm)


def framework_runner(obj: object, llm: FrameworkLLM) -> FrameworkRunner | None:
    """The runner for a framework's agent object; None if `obj` is none of them."""
    from agenthost.frameworks import langgraph, openai_agents, pydantic_ai

    if langgraph.is_graph(obj):
        return langgraph.langgraph_runner(obj)
    if openai_agents.is_agent(obj):
        return openai_agents.openai_agents_runner(obj, llm)
    if pydantic_ai.is_agent(obj):
        return pydantic_ai.pydantic_ai_runner(obj, llm)
    return None
