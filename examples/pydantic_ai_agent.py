"""A Pydantic AI agent with one tool, hosted by agenthost.

    make run ARGS="--app-dir examples pydantic_ai_agent:agent"

The agent has no model of its own, so it runs on the LLM `--llm` configures (with the
default `sim://`, `get_weather Paris` makes the model call the tool).
"""

from pydantic_ai import Agent

agent = Agent(instructions="Answer briefly.")


@agent.tool_plain
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"
