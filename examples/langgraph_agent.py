"""A LangGraph ReAct-style graph hosted by agenthost: a model node and a tool node, with a
weather tool and a tool that asks the human (`interrupt()`).

    make run ARGS="--app-dir examples langgraph_agent:graph"

With the default `--llm sim://`, a message that names a tool makes the model call it:
`get_weather Paris` streams a `tool` event, then the answer; `ask_human what colour?` ends
the turn with an `interrupt` event, and the next message is the human's answer.
"""

from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import interrupt

from agenthost.frameworks.langgraph import chat_model


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@tool
def ask_human(question: str) -> str:
    """Ask the user a question; the next turn's message is the answer."""
    answer: str = interrupt(question)
    return f"the human said {answer}"


tools = [get_weather, ask_human]
model = chat_model().bind_tools(tools)  # the LLM `agenthost serve --llm` configures


async def call_model(state: MessagesState) -> MessagesState:
    return {"messages": [await model.ainvoke(state["messages"])]}


builder = StateGraph(MessagesState)
builder.add_node("model", call_model)
builder.add_node("tools", ToolNode(tools))
builder.add_edge(START, "model")
builder.add_conditional_edges("model", tools_condition)
builder.add_edge("tools", "model")
graph = builder.compile()
