"""What a hosted framework's adapter is handed: the turn (`HostedTurn`, which agenthost's
`Turn` is) and the model `--llm` configures (`FrameworkLLM`), as an OpenAI-compatible client.

`sim://` runs the simulator in this process: the framework's OpenAI client talks to the
`agenthost llm-sim` app through an in-process transport that streams (`llm/sim_transport.py`),
so tool calls and paced tokens behave as over HTTP with no socket.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from agenthost.llm.sim_model import DEFAULT_SIM_MODEL
from agenthost.stores.base import Message

if TYPE_CHECKING:
    import httpx2
    import openai

__all__ = ["FrameworkLLM", "FrameworkRunner", "HostedTurn", "TextSink"]

TextSink = Callable[[str], None]


class HostedTurn(Protocol):
    """The turn as a framework adapter uses it (agenthost's `Turn` is one)."""

    session_id: str
    turn_id: str
    message: str
    history: list[Message]
    metadata: dict[str, Any]
    streaming: bool
    state: bytes | None

    def tool(self, call_id: str, name: str, arguments: Any, result: Any) -> None: ...

    def interrupt(self, value: Any, interrupt_id: str | None = None) -> None: ...

    def save_state(self, state: bytes) -> None: ...


FrameworkRunner = Callable[[Any, TextSink | None], Awaitable[str]]
"""An adapter's turn: (a `HostedTurn`, the text sink or None) → the whole answer."""

_SIM_BASE_URL = "http://llm-sim.in-process/v1"


class FrameworkLLM:
    """The model a hosted framework gets unless its agent brings one: `url` is `--llm`
    (`sim://...` or an OpenAI-compatible base URL), `model` `--llm-model`."""

    def __init__(self, url: str = "sim://", model: str | None = None, api_key: str | None = None):
        self.url = url
        self.model = model
        self.api_key = api_key
        self.is_sim = urlsplit(url).scheme.lower() == "sim"
        self.base_url = _SIM_BASE_URL if self.is_sim else url
        self.model_name = model or DEFAULT_SIM_MODEL
        # The SDKs refuse to start without a key; a local server does not check it.
        self.key = api_key or "unused"
        self._client: openai.AsyncOpenAI | None = None

    def http_client(self) -> httpx2.AsyncClient | None:
        """The HTTP client the framework's OpenAI SDK should use: the in-process simulator
        for `sim://`, None (the SDK's own) otherwise."""
        if not self.is_sim:
            return None
        return _sim_http_client(self.url)

    def openai_client(self) -> openai.AsyncOpenAI:
        """One `AsyncOpenAI` for this model (shared: the SDK pools its connections)."""
        if self._client is None:
            import openai

            self._client = openai.AsyncOpenAI(
                base_url=self.base_url, api_key=self.key, http_client=self.http_client()
            )
        return self._client

    def __repr__(self) -> str:
        return f"FrameworkLLM({self.url!r}, model={self.model_name!r})"


def _sim_http_client(url: str) -> httpx2.AsyncClient:
    import httpx2

    from agenthost.llm.sim_model import settings_from_url
    from agenthost.llm.sim_server import build_llm_sim_app
    from agenthost.llm.sim_transport import StreamingASGITransport

    app = build_llm_sim_app(settings_from_url(url))
    transport = StreamingASGITransport(app)
    return httpx2.AsyncClient(transport=transport, base_url=_SIM_BASE_URL, timeout=600.0)


def answer_text(output: Any) -> str:
    """A run's output as the turn's answer: text as it is, anything else (a pydantic model,
    a dataclass, a dict) as JSON."""
    if isinstance(output, str):
        return output
    dump = getattr(output, "model_dump_json", None)
    if callable(dump):
        return str(dump())
    return json.dumps(output, default=_jsonable, ensure_ascii=False)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    return str(value)


def text_of(parts: Sequence[Any]) -> str:
    """The text of a message's content given as a string or a list of parts."""
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, dict) and part.get("type") == "text":
            out.append(str(part.get("text", "")))
    return "".join(out)
