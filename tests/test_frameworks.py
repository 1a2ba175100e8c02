"""Framework agents hosted as they are, with the real packages, each against `agenthost
llm-sim` over HTTP: a LangGraph ReAct-style graph, an OpenAI Agents SDK agent and a Pydantic
AI agent (examples/), each with one tool. Each streams tokens, emits the tool event and
commits once; its state commits with the turn (the next turn's prompt carries the history);
a LangGraph `interrupt()` ends a turn and the next turn, on another process, resumes it; a
kill -9 mid-turn on a two-process Redis fleet, then a retry, leaves the framework state as
if the dead turn never ran."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.agenthost import AgentHostProcess, wait_until
from tests.fixtures.llm import LLMSimServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
AGENTS = {
    "langgraph": "langgraph_agent:graph",
    "openai-agents": "openai_agents_agent:agent",
    "pydantic-ai": "pydantic_ai_agent:agent",
}


def post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        if resp.headers.get("content-type", "").startswith("text/event-stream"):
            return sse(resp.read().decode())
        return json.load(resp)


def sse(text: str) -> list[tuple[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            events.append((fields.get("event", ""), json.loads(fields["data"])))
    return events


def turn(server: AgentHostProcess, sid: str, message: str, **headers: str) -> Any:
    return post(f"{server.url}/v1/sessions/{sid}/turns", {"message": message}, headers)


def streamed(server: AgentHostProcess, sid: str, message: str) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = turn(server, sid, message, accept="text/event-stream")
    return events


def history(server: AgentHostProcess, sid: str) -> list[tuple[str, str]]:
    with urllib.request.urlopen(f"{server.url}/v1/sessions/{sid}/messages", timeout=10) as r:
        return [(m["role"], m["content"]) for m in json.load(r)["messages"]]


def serve(factory: Callable[..., AgentHostProcess], name: str, **settings: Any) -> Any:
    return factory(cwd=EXAMPLES, app=AGENTS[name], chunk_coalesce_ms=0, **settings)


@pytest.mark.parametrize("name", list(AGENTS))
def test_a_framework_agent_streams_calls_its_tool_and_commits_once_with_its_state(
    name: str, agenthost_factory: Callable[..., AgentHostProcess], llm_sim_server: LLMSimServer
) -> None:
    server = serve(agenthost_factory, name, llm=llm_sim_server.base_url)
    sid = f"{name}-{uuid.uuid4().hex[:8]}"
    events = streamed(server, sid, "get_weather Paris")
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "done" and kinds.count("chunk") > 1, kinds  # tokens, not one block
    [tool] = [data for kind, data in events if kind == "tool"]
    assert tool["name"] == "get_weather" and tool["arguments"] == {"city": "Paris"}
    assert tool["result"] == "sunny in Paris" and tool["call_id"].startswith("call_")
    assert kinds.index("tool") < len(kinds) - 2  # the answer's tokens come after the tool
    answer = events[-1][1]["response"]
    assert answer.startswith("sim: get_weather Paris | tool: sunny in Paris | ")
    assert "".join(d["text"] for k, d in events if k == "chunk") == answer
    assert history(server, sid) == [("user", "get_weather Paris"), ("assistant", answer)]

    # The framework's state went with the commit: the next turn's prompt holds the first
    # turn (the simulated answer hashes the whole prompt), unlike the same message alone.
    again = turn(server, sid, "hello")["response"]
    alone = turn(server, f"fresh-{uuid.uuid4().hex[:8]}", "hello")["response"]
    assert again.startswith("sim: hello | ") and again != alone
    assert len(history(server, sid)) == 4


@pytest.mark.slow
def test_a_langgraph_interrupt_ends_the_turn_and_the_next_turn_resumes_on_another_process(
    agenthost_factory: Callable[..., AgentHostProcess],
    llm_sim_server: LLMSimServer,
    redis_url: str,
) -> None:
    settings = {"store": redis_url, "llm": llm_sim_server.base_url}
    first = serve(agenthost_factory, "langgraph", **settings)
    second = serve(agenthost_factory, "langgraph", **settings)
    sid = f"hitl-{uuid.uuid4().hex[:8]}"
    events = streamed(first, sid, "ask_human what colour?")
    [asked] = [data for kind, data in events if kind == "interrupt"]
    assert asked["value"] == "what colour?" and asked["id"]
    assert events[-1][0] == "done" and events[-1][1]["response"] == "what colour?"

    events = streamed(second, sid, "blue")
    [tool] = [data for kind, data in events if kind == "tool"]
    assert tool["name"] == "ask_human" and tool["arguments"] == {"question": "what colour?"}
    assert tool["result"] == "the human said blue"
    assert "interrupt" not in [kind for kind, _ in events]
    answer = events[-1][1]["response"]
    assert answer.startswith("sim: ask_human what colour? | tool: the human said blue | ")
    assert [role for role, _ in history(second, sid)] == ["user", "assistant"] * 2


@pytest.mark.slow
@pytest.mark.parametrize("name", list(AGENTS))
def test_kill_9_mid_turn_then_a_retry_leaves_the_state_as_if_the_dead_turn_never_ran(
    name: str,
    agenthost_factory: Callable[..., AgentHostProcess],
    llm_sim_factory: Callable[..., LLMSimServer],
    redis_url: str,
) -> None:
    slow = llm_sim_factory("--latency-ms", "1500", "--ttft-ms", "1500")
    settings = {"store": redis_url, "llm": slow.base_url, "lease_ttl": 1.0}
    victim = serve(agenthost_factory, name, **settings)
    survivor = serve(agenthost_factory, name, **settings)
    sid, control = f"kill-{uuid.uuid4().hex[:8]}", f"ctl-{uuid.uuid4().hex[:8]}"
    key = {"idempotency-key": f"k-{uuid.uuid4().hex[:8]}"}

    def doomed() -> None:
        with contextlib.suppress(urllib.error.URLError, ConnectionError):  # it dies under it
            turn(victim, sid, "get_weather Paris", **key)

    start = slow.stats()["requests"]
    caller = threading.Thread(target=doomed)
    caller.start()
    # The tool ran and the second model call is under way: the graph has written its
    # checkpoints, the SDK its items, in the dead turn's memory only.
    wait_until(lambda: slow.stats()["requests"] >= start + 2, 60, "the second model call")
    victim.kill()
    caller.join(30)

    retried = turn(survivor, sid, "get_weather Paris", **key)["response"]
    clean = turn(survivor, control, "get_weather Paris")["response"]
    assert retried == clean  # the same prompt: nothing of the dead attempt in the state
    assert turn(survivor, sid, "hello")["response"] == turn(survivor, control, "hello")["response"]
    assert [m for _, m in history(survivor, sid)] == [m for _, m in history(survivor, control)]
    assert len(history(survivor, sid)) == 4


def test_a_plain_agent_is_loaded_without_importing_any_framework(tmp_path: Path) -> None:
    # Recognising a framework's object never imports the framework: a server of a plain
    # agent runs where none is installed.
    script = (
        "import sys\n"
        "from agenthost.runtime.assembly import assemble\n"
        "from agenthost.core.settings import Settings\n"
        "assemble(Settings(store='memory://', app='mybot:agent'))\n"
        "print(sorted(m for m in ('langgraph', 'agents', 'pydantic_ai', 'langchain_core')"
        " if m in sys.modules))\n"
    )
    (tmp_path / "mybot.py").write_text("async def agent(turn):\n    return turn.message\n")
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
