"""The simulated model calls a tool when tools are offered and the user's message names one,
over real HTTP (`agenthost llm-sim`, read by the official openai SDK), streamed and not, and
quotes the tool's result in its next answer; the same prompt always gives the same call."""

from __future__ import annotations

import json
from typing import Any

import openai
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from agenthost.llm.sim_model import answer_for
from agenthost.llm.sim_tools import tool_call_for, tool_results_of
from tests.fixtures.llm import LLMSimServer

TOOLS: list[ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city", "days"],
            },
        },
    },
    {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}},
]


def test_a_call_is_made_only_when_tools_are_offered_and_the_user_names_one() -> None:
    asks = [{"role": "user", "content": "please get_weather Paris"}]
    call = tool_call_for(asks, TOOLS)  # type: ignore[arg-type]
    assert call is not None and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris", "days": 1}
    assert call.id.startswith("call_") and call == tool_call_for(asks, TOOLS)  # type: ignore[arg-type]
    assert tool_call_for(asks, None) is None
    assert tool_call_for([{"role": "user", "content": "the weather?"}], TOOLS) is None  # type: ignore[arg-type]
    written = [{"role": "user", "content": 'get_weather {"city": "Oslo", "days": 3}'}]
    call = tool_call_for(written, TOOLS)  # type: ignore[arg-type]
    assert call is not None and json.loads(call.arguments) == {"city": "Oslo", "days": 3}
    answered = [*asks, {"role": "assistant", "content": ""}, {"role": "tool", "content": "sun"}]
    assert tool_call_for(answered, TOOLS) is None  # type: ignore[arg-type]
    assert tool_results_of(answered) == ["sun"]
    assert answer_for(answered, words=0) == "sim: please get_weather Paris | tool: sun"


async def test_llm_sim_calls_the_tool_then_quotes_its_result_streamed_and_not(
    llm_sim_server: LLMSimServer,
) -> None:
    client = openai.AsyncOpenAI(base_url=llm_sim_server.base_url, api_key="x", max_retries=0)
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "get_weather Lisbon"}]
    reply = await client.chat.completions.create(
        model="agenthost-sim", messages=messages, tools=TOOLS
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call: Any = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Lisbon", "days": 1}

    stream = await client.chat.completions.create(
        model="agenthost-sim", messages=messages, tools=TOOLS, stream=True
    )
    ids, names, arguments, reasons = [], [], "", []
    async for chunk in stream:
        delta = chunk.choices[0].delta
        for part in delta.tool_calls or []:
            ids.append(part.id)
            names.append(part.function.name if part.function else None)
            arguments += (part.function.arguments or "") if part.function else ""
        reasons.append(chunk.choices[0].finish_reason)
    assert [i for i in ids if i] == [call.id]
    assert [n for n in names if n] == ["get_weather"]
    assert json.loads(arguments) == {"city": "Lisbon", "days": 1}
    assert reasons[-1] == "tool_calls"

    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
    ]
    final = await client.chat.completions.create(
        model="agenthost-sim", messages=messages, tools=TOOLS
    )
    text = final.choices[0].message.content or ""
    assert final.choices[0].finish_reason == "stop"
    assert text.startswith("sim: get_weather Lisbon | tool: sunny, 21 C | ")
    await client.close()
