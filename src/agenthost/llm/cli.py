"""The `agenthost llm-sim` command (registered by `agenthost.cli`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from agenthost.llm.server import run_llm_sim
from agenthost.llm.simulated import SimSettings

__all__ = ["llm_sim"]


def _opt(name: str, text: str) -> Any:
    env = "AGENTHOST_LLM_SIM_" + name.upper().replace("-", "_")
    return typer.Option(f"--{name}", envvar=env, help=text, show_envvar=True)


def llm_sim(
    host: Annotated[str, _opt("host", "Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, _opt("port", "Port to listen on.")] = 9000,
    latency_ms: Annotated[float, _opt("latency-ms", "Time of a non-streamed answer.")] = 0.0,
    ttft_ms: Annotated[float, _opt("ttft-ms", "Time to the first streamed token.")] = 0.0,
    tokens_per_s: Annotated[float, _opt("tokens-per-s", "Streaming pace (0: at once).")] = 0.0,
    error_rate: Annotated[float, _opt("error-rate", "Share of requests failed with 503.")] = 0.0,
    seed: Annotated[int, _opt("seed", "Seed of answers and injected errors.")] = 0,
    words: Annotated[int, _opt("words", "Words added to each answer.")] = 8,
    model: Annotated[str, _opt("model", "The model name /v1/models lists.")] = "agenthost-sim",
) -> None:
    """Serve an OpenAI-compatible /v1/chat/completions (streaming too) and /v1/models with
    a simulated model whose answers derive from the prompt."""
    try:
        settings = SimSettings(
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
            tokens_per_s=tokens_per_s,
            error_rate=error_rate,
            seed=seed,
            words=words,
            model=model,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    run_llm_sim(host, port, settings)
