"""An OpenAI Agents SDK agent with one function tool, hosted by agenthost.

    make run ARGS="--app-dir examples openai_agents_agent:agent"

The agent has no model of its own, so it runs on the LLM `--llm` configures (with the
default `sim://`, `get_weather Paris` makes the model call the tool).
"""

from agents import Agent, function_tool


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


agent = Agent(name="weather", instructions="Answer briefly.", tools=[get_weather])
