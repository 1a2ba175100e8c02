"""The echo-like LangGraph graph `benchmarks/framework_cpu.py` serves (one model call, no
tool), under agenthost and under `langgraph dev`. `FRAMEWORK_BENCH_LLM` set (by the
benchmark, for `langgraph dev`, which does not configure agenthost's model) points
`chat_model()` at that LLM URL."""

from __future__ import annotations

import os

from langgraph.graph import START, MessagesState, StateGraph

from agenthost.frameworks import FrameworkLLM, configure
from agenthost.frameworks.langgraph import chat_model

if "FRAMEWORK_BENCH_LLM" in os.environ:
    configure(FrameworkLLM(os.environ["FRAMEWORK_BENCH_LLM"]))

model = chat_model()


async def call_model(state: MessagesState) -> MessagesState:
    return {"messages": [await model.ainvoke(state["messages"])]}


builder = StateGraph(MessagesState)
builder.add_node("model", call_model)
builder.add_edge(START, "model")
graph = builder.compile()
