"""Test helpers for agents: run an agent of any shape (a function, a generator, a LangGraph
graph, an Agents SDK or Pydantic AI agent) for a few turns in this process against the
simulated LLM.

    from agenthost.testing import run_turns

    async def test_my_agent() -> None:
        first, second = await run_turns(mybot.agent, ["get_weather Paris", "thanks"])
        assert first.tools[0].name == "get_weather"
"""

from agenthost.testing.session import AgentSession, Reply, run_turns

__all__ = ["AgentSession", "Reply", "run_turns"]
