"""Run an agent for a few turns in this process, the way `agenthost serve` runs it: the
same turn engine, an in-memory store, and the simulated LLM (or any `--llm` URL), so a
user's own tests see what a client would — the answer, its chunks, the tool events, an
interrupt, and the framework state committed between turns — without a server.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import msgspec

from agenthost.core.ids import new_session_id
from agenthost.frameworks import FrameworkLLM
from agenthost.llm import create_llm
from agenthost.stores.base import Message
from agenthost.stores.memory import MemoryStore
from agenthost.turns.agents import load_agent, wrap_agent
from agenthost.turns.engine import TurnEngine
from agenthost.turns.turn_events import InterruptEvent, ToolEvent, decode_interrupt, decode_tool

__all__ = ["AgentSession", "Reply", "run_turns"]


class Reply(msgspec.Struct):
    """One turn as a streaming client saw it: the committed `text`, the `chunks` it came
    in, the `tools` the agent called, and the `interrupt` that ended it, if any."""

    turn_id: str
    text: str
    chunks: list[str]
    tools: list[ToolEvent]
    interrupt: InterruptEvent | None = None


class AgentSession:
    """One conversation with `agent` (any accepted shape, or `"module:attr"`), turn by turn.

    `llm` is what `--llm` would be (default: the instant simulator); `stream=False` runs
    turns as a client that waits for the whole answer does (no chunks, no events).
    """

    def __init__(
        self,
        agent: Any,
        *,
        llm: str = "sim://",
        session_id: str | None = None,
        stream: bool = True,
        history_window: int = 50,
        app_dir: str = ".",
    ) -> None:
        framework_llm = FrameworkLLM(llm)
        if isinstance(agent, str):
            runner = load_agent(agent, app_dir, framework_llm)
        else:
            runner = wrap_agent(agent, framework_llm)
        self.store = MemoryStore()
        self.llm = create_llm(llm)
        self.engine = TurnEngine(self.store, runner, self.llm, history_window=history_window)
        self.session_id = session_id or new_session_id()
        self.stream = stream

    async def send(self, message: str, *, metadata: dict[str, Any] | None = None) -> Reply:
        """Run one turn with `message` to its commit and return what it streamed."""
        chunks: list[str] = []
        tools: list[ToolEvent] = []
        interrupts: list[InterruptEvent] = []

        def on_event(kind: str, data: bytes) -> None:
            if kind == "tool":
                tools.append(decode_tool(data))
            elif kind == "interrupt":
                interrupts.append(decode_interrupt(data))

        record = await self.engine.run_turn(
            self.session_id,
            message,
            metadata=metadata,
            on_chunk=chunks.append if self.stream else None,
            on_event=on_event if self.stream else None,
        )
        interrupt = interrupts[-1] if interrupts else None
        return Reply(record.turn_id, record.response or "", chunks, tools, interrupt)

    async def messages(self) -> list[Message]:
        """The session's committed history, oldest first."""
        return await self.store.list_messages(self.session_id, 10_000) or []

    async def close(self) -> None:
        await self.llm.close()

    async def __aenter__(self) -> AgentSession:
        await self.store.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def run_turns(agent: Any, messages: list[str], *, llm: str = "sim://") -> list[Reply]:
    """Run `messages` as consecutive turns of one new session; their replies, in order."""
    async with AgentSession(agent, llm=llm) as session:
        return [await session.send(message) for message in messages]
