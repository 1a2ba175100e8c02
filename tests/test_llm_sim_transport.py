"""`sim://` for a framework: its OpenAI client reaches the simulator in process through
`StreamingASGITransport`, which hands over each token as the simulator writes it (not the
whole body at the end), and answers tool calls as `llm-sim` does over HTTP."""

from __future__ import annotations

import time

from agenthost.frameworks import FrameworkLLM


async def test_a_paced_stream_arrives_token_by_token() -> None:
    # 13 tokens at 10 a second: about 1.2 s from the first to the last.
    llm = FrameworkLLM("sim://?tokens_per_s=10&words=10")
    client = llm.openai_client()
    stream = await client.chat.completions.create(
        model=llm.model_name, messages=[{"role": "user", "content": "pace"}], stream=True
    )
    arrivals = []
    text = ""
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
            text += chunk.choices[0].delta.content
    assert text.startswith("sim: pace | ") and len(arrivals) == 13
    # Buffered, every token would arrive at once at the end; streamed, they are spread out.
    assert arrivals[-1] - arrivals[0] > 0.5
    await client.close()


async def test_tool_calls_and_plain_answers_come_through() -> None:
    llm = FrameworkLLM("sim://?words=2")
    client = llm.openai_client()
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    reply = await client.chat.completions.create(
        model=llm.model_name,
        messages=[{"role": "user", "content": "lookup x"}],
        tools=tools,  # type: ignore[arg-type]
    )
    calls = reply.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["lookup"]  # type: ignore[union-attr]
    plain = await client.chat.completions.create(
        model=llm.model_name, messages=[{"role": "user", "content": "hi"}]
    )
    assert (plain.choices[0].message.content or "").startswith("sim: hi | ")
    await client.close()
