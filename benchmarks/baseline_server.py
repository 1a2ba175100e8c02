"""The reference design's sample server, rebuilt for comparison (our code, its design).

FastAPI; one module-level *synchronous* redis-py client used inside `async def` handlers;
the whole history is one JSON blob under one key, read, appended and rewritten (SETEX, 1 h)
on every turn. Run: `python benchmarks/baseline_server.py --port 8001 --redis URL`.

With `--llm-url http://host:port/v1` the agent is the design's obvious real one: it sends the
whole history to that OpenAI-compatible LLM through the official `openai` SDK
(`AsyncOpenAI`, its defaults), streaming, and answers the joined text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

import openai
import redis
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

REDIS_URL = os.environ.get("BASELINE_REDIS_URL", "redis://127.0.0.1:6379/0")
LLM_LATENCY_S = float(os.environ.get("BASELINE_LLM_LATENCY_MS", "0")) / 1000
SESSION_TTL_S = 3600
LLM: openai.AsyncOpenAI | None = None  # set by --llm-url
LLM_MODEL = "agenthost-sim"

app = FastAPI()
# Module-level and synchronous on purpose: that is the design being measured. Every call
# blocks the event loop for a full Redis round trip.
r = redis.Redis.from_url(REDIS_URL)


class ChatRequest(BaseModel):
    message: str


async def call_agent(messages: list[dict[str, str]], metadata: dict[str, object]) -> str:
    """The agent: instant and deterministic, the same work as agenthost's `sim://?words=0`;
    with --llm-url, the whole history streamed through the openai SDK."""
    if LLM is not None:
        stream = await LLM.chat.completions.create(
            model=LLM_MODEL,
            messages=messages,  # type: ignore[arg-type]
            stream=True,
        )
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        return "".join(parts)
    if LLM_LATENCY_S:
        await asyncio.sleep(LLM_LATENCY_S)
    return "sim: " + messages[-1]["content"]


@app.post("/chat/{session_id}")
async def chat(session_id: str, req: ChatRequest) -> dict[str, str]:
    key = f"session:{session_id}"
    raw = r.get(key)
    history: list[dict[str, str]] = json.loads(raw) if raw else []
    history.append({"role": "user", "content": req.message})
    response = await call_agent(history, {})
    history.append({"role": "assistant", "content": response})
    r.setex(key, SESSION_TTL_S, json.dumps(history))
    return {"response": response}


@app.get("/chat/{session_id}/history")
async def get_history(session_id: str) -> dict[str, list[dict[str, str]]]:
    raw = r.get(f"session:{session_id}")
    return {"messages": json.loads(raw) if raw else []}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    global r, LLM_LATENCY_S, LLM, LLM_MODEL
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("BASELINE_PORT", "8001")))
    parser.add_argument("--redis", default=REDIS_URL, help="env BASELINE_REDIS_URL")
    parser.add_argument(
        "--llm-latency-ms",
        type=float,
        default=LLM_LATENCY_S * 1000,
        help="the agent awaits this long, as if calling an LLM (env BASELINE_LLM_LATENCY_MS)",
    )
    parser.add_argument("--llm-url", help="an OpenAI-compatible base URL the agent streams from")
    parser.add_argument("--llm-model", default=LLM_MODEL)
    args = parser.parse_args()
    r = redis.Redis.from_url(args.redis)
    if args.llm_url:
        LLM = openai.AsyncOpenAI(base_url=args.llm_url, api_key="unused")
        LLM_MODEL = args.llm_model
    LLM_LATENCY_S = args.llm_latency_ms / 1000
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
