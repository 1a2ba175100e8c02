"""A compiled LangGraph graph as an agenthost agent: `agenthost serve mybot:graph`.

Each turn runs `graph.astream` on the session's thread (`thread_id` = the session id) with
the `messages` stream mode (the model's tokens become chunks) and the `updates` mode (each
tool call and its result become a `tool` event; an `interrupt()` becomes an `interrupt`
event and ends the turn). The user's message is the input (`{"messages": [user]}`), or,
when the graph waits on an interrupt, the answer it resumes with (`Command(resume=...)`).

**The checkpoint commits with the turn.** The graph runs on a checkpointer whose storage is
the turn's own: it is loaded from the session's agent state when the turn starts, and what
the graph writes during the turn is saved back into the state that `commit_turn` writes with
the turn's messages, under the same fence. A turn that fails, or whose process dies, saves
nothing: its retry starts from the previous checkpoint, on any process and any store. Only
the thread's newest checkpoint (with its pending writes and channel values) is kept, so the
state does not grow with the conversation's steps; a graph with delta channels keeps them
all, as they are rebuilt from their ancestors.

A node gets the model configured with `--llm` from `chat_model()` (a `ChatOpenAI` on that
base URL, or the in-process simulator for `sim://`); a graph built on its own model keeps it.
"""

from __future__ import annotations

import contextvars
from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from agenthost.frameworks.base import (
    FrameworkLLM,
    FrameworkRunner,
    HostedTurn,
    TextSink,
    answer_text,
    text_of,
)

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI

__all__ = ["chat_model", "configure", "is_graph", "langgraph_runner"]

_llm = FrameworkLLM()
_models: dict[tuple[str, str, str], ChatOpenAI] = {}


def configure(llm: FrameworkLLM) -> None:
    """Make `chat_model()` answer with `llm` (agenthost calls it before importing the app)."""
    global _llm
    _llm = llm


def chat_model(**options: Any) -> ChatOpenAI:
    """A LangChain chat model on the LLM `agenthost serve --llm` configures (options go to
    `ChatOpenAI`, e.g. `temperature`). Call it at import time or in a node."""
    from langchain_openai import ChatOpenAI

    llm = _llm
    key = (llm.url, llm.model_name, llm.key)
    if not options and key in _models:
        return _models[key]
    model = ChatOpenAI(
        model=llm.model_name,
        base_url=llm.base_url,
        api_key=llm.key,  # type: ignore[arg-type]
        http_async_client=llm.http_client(),
        **options,
    )
    if not options:
        _models[key] = model
    return model


def is_graph(obj: object) -> bool:
    """A compiled LangGraph graph (Pregel), recognised without importing LangGraph."""
    for cls in type(obj).__mro__:
        if cls.__module__.startswith("langgraph.pregel") and cls.__name__ == "Pregel":
            return True
    return False


# -- the checkpoint kept in the session's state ---------------------------------------------


class _Thread:
    """One session's checkpoints, writes and channel values, in InMemorySaver's layout."""

    __slots__ = ("blobs", "interrupted", "storage", "writes")

    def __init__(self) -> None:
        self.storage: defaultdict[str, Any] = defaultdict(lambda: defaultdict(dict))
        self.writes: defaultdict[tuple[str, str, str], dict[Any, Any]] = defaultdict(dict)
        self.blobs: dict[tuple[Any, ...], Any] = {}
        self.interrupted = False


class _Saved(msgspec.Struct, array_like=True):
    interrupted: bool
    checkpoints: list[tuple[str, str, tuple[str, bytes], tuple[str, bytes], str | None]]
    writes: list[tuple[str, str, str, int, str, tuple[str, bytes], str]]
    blobs: list[tuple[str, str, Any, tuple[str, bytes]]]


_CURRENT: contextvars.ContextVar[_Thread] = contextvars.ContextVar("agenthost_langgraph_thread")
_encode = msgspec.msgpack.encode
_decode = msgspec.msgpack.Decoder(_Saved).decode


def load_thread(state: bytes | None, thread_id: str) -> _Thread:
    """The thread as the session's state holds it (empty for none)."""
    thread = _Thread()
    if not state:
        return thread
    saved = _decode(state)
    thread.interrupted = saved.interrupted
    for ns, cid, checkpoint, metadata, parent in saved.checkpoints:
        thread.storage[thread_id][ns][cid] = (checkpoint, metadata, parent)
    for ns, cid, task_id, idx, channel, value, task_path in saved.writes:
        thread.writes[(thread_id, ns, cid)][(task_id, idx)] = (task_id, channel, value, task_path)
    for ns, channel, version, value in saved.blobs:
        thread.blobs[(thread_id, ns, channel, version)] = value
    return thread


def dump_thread(thread: _Thread, thread_id: str, serde: Any, keep_all: bool) -> bytes:
    """The thread as bytes for the session's state: the newest checkpoint of each namespace
    with its writes and the channel values it names (everything, with `keep_all`)."""
    checkpoints = []
    wanted: set[tuple[str, str, Any]] | None = None if keep_all else set()
    newest: set[tuple[str, str]] = set()
    for ns, by_id in thread.storage.get(thread_id, {}).items():
        ids = sorted(by_id) if keep_all else [max(by_id)] if by_id else []
        for cid in ids:
            checkpoint, metadata, parent = by_id[cid]
            checkpoints.append((ns, cid, tuple(checkpoint), tuple(metadata), parent))
            newest.add((ns, cid))
            if wanted is not None:
                versions = serde.loads_typed(checkpoint).get("channel_versions", {})
                wanted.update((ns, channel, version) for channel, version in versions.items())
    writes = [
        (ns, cid, task_id, idx, channel, tuple(value), task_path)
        for (tid, ns, cid), entries in thread.writes.items()
        if tid == thread_id and (ns, cid) in newest
        for (task_id, idx), (_, channel, value, task_path) in entries.items()
    ]
    blobs = [
        (ns, channel, version, tuple(value))
        for (tid, ns, channel, version), value in thread.blobs.items()
        if tid == thread_id and (wanted is None or (ns, channel, version) in wanted)
    ]
    return _encode(_Saved(thread.interrupted, checkpoints, writes, blobs))


def _turn_saver() -> Any:
    """An InMemorySaver whose storage is the running turn's `_Thread` (a context variable),
    so one compiled graph serves every turn and each turn sees only its session."""
    from langgraph.checkpoint.memory import InMemorySaver

    def current() -> _Thread:
        try:
            return _CURRENT.get()
        except LookupError:  # used outside a turn (e.g. graph.get_state in a test)
            thread = _Thread()
            _CURRENT.set(thread)
            return thread

    class TurnSaver(InMemorySaver):
        storage = property(lambda self: current().storage, lambda self, value: None)
        writes = property(lambda self: current().writes, lambda self, value: None)
        blobs = property(lambda self: current().blobs, lambda self, value: None)

    return TurnSaver()


# -- the turn ----------------------------------------------------------------------------------


def _messages_in(update: Any) -> Iterator[Any]:
    """The messages an `updates` chunk carries ({node: {"messages": [...]}})."""
    if not isinstance(update, Mapping):
        return
    for value in update.values():
        if isinstance(value, Mapping):
            messages = value.get("messages")
            if isinstance(messages, list):
                yield from messages
            elif messages is not None:
                yield messages


async def _calls_in_state(graph: Any, config: Any) -> dict[str, Any]:
    """The tool calls of the thread's messages, by id (from its checkpoint)."""
    snapshot = await graph.aget_state(config)
    values = getattr(snapshot, "values", None)
    messages = values.get("messages", []) if isinstance(values, Mapping) else []
    return {
        call["id"]: call
        for message in messages
        for call in getattr(message, "tool_calls", None) or ()
    }


def langgraph_runner(graph: Any) -> FrameworkRunner:
    """Wrap a compiled graph; its own checkpointer is replaced by the turn's (see above)."""
    from langgraph.channels.delta import DeltaChannel
    from langgraph.types import Command

    saver = _turn_saver()
    hosted = graph.copy({"checkpointer": saver})
    keep_all = any(isinstance(ch, DeltaChannel) for ch in getattr(graph, "channels", {}).values())

    async def run(turn: HostedTurn, sink: TextSink | None) -> str:
        thread_id = turn.session_id
        thread = load_thread(turn.state, thread_id)
        token = _CURRENT.set(thread)  # the graph's tasks inherit this context
        try:
            return await _run(turn, sink, thread, thread_id)
        finally:
            _CURRENT.reset(token)

    async def _run(turn: HostedTurn, sink: TextSink | None, thread: _Thread, thread_id: str) -> str:
        config = {"configurable": {"thread_id": thread_id}}
        graph_input: Any
        if thread.interrupted:
            graph_input = Command(resume=turn.message)
        else:
            graph_input = {"messages": [{"role": "user", "content": turn.message}]}
        parts: list[str] = []
        calls: dict[str, Any] = {}
        interrupts: list[Any] = []
        last_ai = ""
        async for mode, chunk in hosted.astream(
            graph_input, config, stream_mode=["messages", "updates"]
        ):
            if mode == "messages":
                message = chunk[0]
                if type(message).__name__ == "AIMessageChunk":
                    content = message.content
                    text = content if isinstance(content, str) else text_of(content)
                    if text:
                        parts.append(text)
                        if sink is not None:
                            sink(text)
                continue
            if "__interrupt__" in chunk:
                interrupts.extend(chunk["__interrupt__"])
                continue
            for message in _messages_in(chunk):
                for call in getattr(message, "tool_calls", None) or ():
                    calls[call["id"]] = call
                if type(message).__name__ == "AIMessage" and isinstance(message.content, str):
                    last_ai = message.content
                call_id = getattr(message, "tool_call_id", None)
                if call_id is not None and type(message).__name__ == "ToolMessage":
                    if call_id not in calls:  # asked for in an earlier turn (an interrupt)
                        calls.update(await _calls_in_state(hosted, config))
                    call = calls.get(call_id, {})
                    name = getattr(message, "name", None) or call.get("name", "")
                    turn.tool(call_id, name, call.get("args", {}), message.content)
        thread.interrupted = bool(interrupts)
        turn.save_state(dump_thread(thread, thread_id, saver.serde, keep_all))
        if interrupts:
            first = interrupts[0]
            value = getattr(first, "value", first)
            turn.interrupt(value, getattr(first, "id", None))
            asked = answer_text(value)
            if sink is not None:
                sink(asked)
            return "".join(parts) + asked if parts else asked
        return "".join(parts) or last_ai

    return run
