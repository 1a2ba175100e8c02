"""The user's agent: what it is handed (`Turn`) and how each accepted shape is called.

Accepted shapes, detected once at load time so a turn pays no inspection cost:
* `async def agent(turn) -> str`
* `async def agent(turn)` that is an async generator yielding text chunks
* the reference design's `async def call_agent(messages, metadata) -> str`
* a framework's agent object: a compiled LangGraph graph, an OpenAI Agents SDK `Agent`, a
  Pydantic AI `Agent` (`agenthost.frameworks`), run on the `--llm` model unless it has one
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from agenthost.frameworks import FrameworkLLM, configure, framework_runner
from agenthost.llm.base import ChatMessage, LLMClient
from agenthost.stores.base import Message
from agenthost.turns.turn_events import EventSink, InterruptEvent, ToolEvent, encode_event

__all__ = ["AgentRunner", "ChunkSink", "Turn", "demo_agent", "load_agent", "wrap_agent"]

ChunkSink = Callable[[str], None]
"""Receives each chunk of a streamed answer as the agent produces it."""

AgentRunner = Callable[["Turn", ChunkSink | None], Awaitable[str]]
"""The uniform form every agent shape is wrapped into: returns the whole answer."""


class Turn:
    """One turn as the agent sees it.

    `history` is the window of the newest messages (oldest first) before this turn;
    `metadata` is the session's metadata: changes made to it are saved with the turn.
    `tool()` and `interrupt()` tell a streaming client what the agent does besides writing.
    `state` is the session's agent state (opaque bytes) as the last committed turn saved it;
    `save_state()` replaces it in this turn's commit, so a turn that fails leaves it as it was.
    """

    __slots__ = (
        "events",
        "history",
        "llm",
        "message",
        "metadata",
        "new_state",
        "session_id",
        "state",
        "streaming",
        "turn_id",
    )

    def __init__(
        self,
        session_id: str,
        turn_id: str,
        message: str,
        history: list[Message],
        metadata: dict[str, Any],
        llm: LLMClient,
        streaming: bool = False,
        events: EventSink | None = None,
        state: bytes | None = None,
    ) -> None:
        self.session_id = session_id
        self.turn_id = turn_id
        self.message = message
        self.history = history
        self.metadata = metadata
        self.llm = llm
        self.streaming = streaming  # a client watches the answer arrive: yield chunks
        self.events = events
        self.state = state
        self.new_state: bytes | None = None

    def save_state(self, state: bytes) -> None:
        """Commit `state` with this turn (atomically with its messages, under its fence)."""
        self.new_state = state

    def tool(self, call_id: str, name: str, arguments: Any, result: Any) -> None:
        """Tell a streaming client that the agent called tool `name` (a `tool` event, after
        the text so far); nothing for a client that waits for the whole answer."""
        if self.events is not None:
            self.events("tool", encode_event(ToolEvent(call_id, name, arguments, result)))

    def interrupt(self, value: Any, interrupt_id: str | None = None) -> None:
        """Tell a streaming client the agent stopped to ask `value` (an `interrupt` event);
        the turn then ends, and the next turn's message is the human's answer."""
        if self.events is not None:
            self.events("interrupt", encode_event(InterruptEvent(value, interrupt_id)))

    def messages(self) -> list[ChatMessage]:
        """History plus the new user message, as OpenAI-style chat messages."""
        out: list[ChatMessage] = [{"role": m.role, "content": m.content} for m in self.history]
        out.append({"role": "user", "content": self.message})
        return out

    def __repr__(self) -> str:
        return f"Turn(session_id={self.session_id!r}, turn_id={self.turn_id!r})"


async def demo_agent(turn: Turn) -> AsyncIterator[str]:
    """The built-in agent: answers through the configured LLM with the history window,
    token by token when the client streams, in one call otherwise."""
    if turn.streaming:
        async for chunk in turn.llm.stream(turn.messages()):
            yield chunk
    else:
        yield await turn.llm.complete(turn.messages())


async def run_demo_agent(turn: Turn, sink: ChunkSink | None) -> str:
    """`demo_agent` as `wrap_agent` would run it, without the generator between the model's
    stream and the sink: one hop less for every token of every stream the server runs with
    the built-in agent."""
    if not turn.streaming:
        answer = await turn.llm.complete(turn.messages())
        if sink is not None:
            sink(answer)
        return answer
    parts: list[str] = []
    async for chunk in turn.llm.stream(turn.messages()):
        if not isinstance(chunk, str):
            raise TypeError(f"agent yielded {type(chunk).__name__}, expected str")
        parts.append(chunk)
        if sink is not None:
            sink(chunk)
    return "".join(parts)


def load_agent(
    spec: str | None, app_dir: str = ".", llm: FrameworkLLM | None = None
) -> AgentRunner:
    """Import `module:attr` (None: the demo agent) and wrap it; ValueError explains misuse.

    `app_dir` (default: the current directory) goes first on the import path, as uvicorn's
    `--app-dir` does, so `agenthost serve mybot:agent` finds `./mybot.py`. `llm` is the model
    a framework's agent gets unless it has its own (configured before the import, so a
    module that builds its graph at import time gets it too).
    """
    llm = llm or FrameworkLLM()
    if spec is None:
        return run_demo_agent
    configure(llm)
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"agent {spec!r} must be given as module:attribute, e.g. mypkg.bot:agent")
    directory = os.path.abspath(app_dir)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise ValueError(
                f"cannot import agent module {module_name!r}: no {module_name.replace('.', '/')}"
                f".py (or package) in {directory} (--app-dir) nor among the installed packages"
            ) from exc
        raise ValueError(f"agent module {module_name!r} failed to import: {exc}") from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None
    return wrap_agent(target, llm)


def _positional_names(fn: Callable[..., Any]) -> list[str]:
    params = inspect.signature(fn).parameters.values()
    return [
        p.name
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"
    ]


def wrap_agent(fn: Any, llm: FrameworkLLM | None = None) -> AgentRunner:
    """Wrap one of the accepted agent shapes into an `AgentRunner`; TypeError otherwise.

    An object with an async `__call__` is accepted like the function it wraps; a framework's
    agent object runs on its adapter (`agenthost.frameworks`), with `llm` as its model
    unless it has one.
    """
    hosted = framework_runner(fn, llm or FrameworkLLM())
    if hosted is not None:
        return hosted
    if not callable(fn):
        raise TypeError(f"agent {fn!r} is not callable")
    call: Callable[..., Any] = fn if inspect.isroutine(fn) else fn.__call__
    names = _positional_names(call)

    if inspect.isasyncgenfunction(call):
        if len(names) != 1:
            raise TypeError("an async generator agent takes one argument: turn")
        gen_fn: Callable[[Turn], AsyncIterator[str]] = fn

        async def run_generator(turn: Turn, sink: ChunkSink | None) -> str:
            parts: list[str] = []
            async for chunk in gen_fn(turn):
                if not isinstance(chunk, str):
                    raise TypeError(f"agent yielded {type(chunk).__name__}, expected str")
                parts.append(chunk)
                if sink is not None:
                    sink(chunk)
            return "".join(parts)

        return run_generator

    if not inspect.iscoroutinefunction(call):
        raise TypeError(
            "agent must be an async function: async def agent(turn) -> str, an async "
            "generator yielding str, or async def call_agent(messages, metadata) -> str"
        )

    if len(names) == 2:
        legacy: Callable[[list[ChatMessage], dict[str, Any]], Awaitable[str]] = fn

        async def run_legacy(turn: Turn, sink: ChunkSink | None) -> str:
            answer = _check_answer(await legacy(turn.messages(), turn.metadata))
            if sink is not None:
                sink(answer)
            return answer

        return run_legacy

    if len(names) == 1:
        simple: Callable[[Turn], Awaitable[str]] = fn

        async def run_simple(turn: Turn, sink: ChunkSink | None) -> str:
            answer = _check_answer(await simple(turn))
            if sink is not None:
                sink(answer)
            return answer

        return run_simple

    raise TypeError(
        f"agent takes {len(names)} positional arguments; expected (turn) or (messages, metadata)"
    )


def _check_answer(answer: object) -> str:
    if not isinstance(answer, str):
        raise TypeError(f"agent returned {type(answer).__name__}, expected str")
    return answer
