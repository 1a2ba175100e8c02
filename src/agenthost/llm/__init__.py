"""LLM clients: `create_llm(url)` picks the in-process simulator (`sim://`) or any
OpenAI-compatible server (`http(s)://.../v1`, through the official `openai` SDK); both raise
only `LLMError` subclasses."""

from __future__ import annotations

from urllib.parse import urlsplit

import msgspec

from agenthost.llm.base import ChatMessage, LLMClient
from agenthost.llm.errors import (
    LLMError,
    LLMRateLimited,
    LLMRejected,
    LLMTimeout,
    LLMUpstreamError,
)
from agenthost.llm.sim_model import DEFAULT_SIM_MODEL

__all__ = [
    "DEFAULT_MODEL",
    "ChatMessage",
    "LLMClient",
    "LLMError",
    "LLMRateLimited",
    "LLMRejected",
    "LLMTimeout",
    "LLMUpstreamError",
    "create_llm",
]

DEFAULT_MODEL = DEFAULT_SIM_MODEL
"""The model asked of an OpenAI-compatible server when none is configured: the one
`agenthost llm-sim` serves, so `--llm http://127.0.0.1:9000/v1` works without `--llm-model`.
Any other server needs its real model name."""


def create_llm(
    url: str,
    *,
    model: str | None = None,
    api_key: str | None = None,
    timeout: float = 60.0,
    transport: str | None = None,
) -> LLMClient:
    """The client for `url`:

    - `sim://?latency_ms=..&ttft_ms=..&tokens_per_s=..&error_rate=..&seed=..&words=..` → the
      in-process simulator (`model` overrides its name, e.g. `error-429` to inject failures);
    - `http://host:port/v1` or `https://...` → `OpenAILLM` for that base URL, asking for
      `model` (default `DEFAULT_MODEL`) with `api_key`, each attempt bounded by `timeout` s,
      over the SDK's `transport` (`aiohttp` or `httpx`; None: `DEFAULT_LLM_TRANSPORT`).

    Anything else is a ValueError saying which forms are accepted.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "sim":
        from agenthost.llm.sim_client import SimLLM
        from agenthost.llm.sim_model import settings_from_url

        settings = settings_from_url(url)
        if model:
            settings = msgspec.structs.replace(settings, model=model)
        return SimLLM(settings)
    if scheme in ("http", "https"):
        if not urlsplit(url).hostname:
            raise ValueError(f"LLM URL {url!r} has no host")
        from agenthost.llm.openai import DEFAULT_LLM_TRANSPORT, LLM_TRANSPORTS, OpenAILLM

        if timeout <= 0:
            raise ValueError(f"LLM timeout must be > 0 s, not {timeout}")
        chosen = transport or DEFAULT_LLM_TRANSPORT
        if chosen not in LLM_TRANSPORTS:
            raise ValueError(
                f"unknown LLM transport {chosen!r}: expected {' or '.join(LLM_TRANSPORTS)}"
            )
        return OpenAILLM(
            url,
            model=model or DEFAULT_MODEL,
            api_key=api_key,
            timeout=timeout,
            transport=chosen,
        )
    raise ValueError(
        f"unknown LLM URL {url!r}: expected sim:// (the built-in simulator, e.g. "
        "sim://?latency_ms=2000&tokens_per_s=50) or an OpenAI-compatible base URL such as "
        "http://127.0.0.1:9000/v1 or https://api.openai.com/v1"
    )
