"""The `agenthost llm-sim` command: a plain function with Typer-annotated parameters, which
`agenthost.cli` registers; every flag also reads `AGENTHOST_LLM_SIM_<FLAG>`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from agenthost.llm.sim_model import DEFAULT_SIM_MODEL, SimSettings

__all__ = ["llm_sim"]


def _opt(name: str, text: str) -> Any:
    env = "AGENTHOST_LLM_SIM_" + name.upper().replace("-", "_")
    return typer.Option(f"--{name}", envvar=env, help=text, show_envvar=True)


def llm_sim(
    host: Annotated[str, _opt("host", "Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, _opt("port", "Port to listen on.")] = 9000,
    latency_ms: Annotated[
        float,
        _opt("latency-ms", "Time of a non-streamed answer (0: ttft + tokens at tokens/s)."),
    ] = 0.0,
    ttft_ms: Annotated[
        float,
        _opt("ttft-ms", "Time to a stream's first token (0 with --tokens-per-s 0: the latency)."),
    ] = 0.0,
    tokens_per_s: Annotated[
        float, _opt("tokens-per-s", "Pace of streamed tokens (0: all at once).")
    ] = 0.0,
    error_rate: Annotated[
        float, _opt("error-rate", "Share of requests failed with 503 (0 to 1).")
    ] = 0.0,
    seed: Annotated[int, _opt("seed", "Seed of the answers and of the injected errors.")] = 0,
    words: Annotated[int, _opt("words", "Words added to each answer after the echo.")] = 8,
    retry_after_ms: Annotated[
        float, _opt("retry-after-ms", "Retry-After sent with injected 429s and 503s.")
    ] = 1000.0,
    model: Annotated[str, _opt("model", "The model name /v1/models lists.")] = DEFAULT_SIM_MODEL,
) -> None:
    """Serve an OpenAI-compatible /v1/chat/completions (streaming too) and /v1/models from a
    simulated model whose answers derive from the prompt: `sim: <last user message> | <words>`.
    Model names error-429, error-500, error-502, error-503 and error-timeout (optionally
    -x<N>: only the first N requests of each prompt) inject that failure."""
    try:
        settings = SimSettings(
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
            tokens_per_s=tokens_per_s,
            error_rate=error_rate,
            seed=seed,
            words=words,
            retry_after_ms=retry_after_ms,
            model=model,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if not 0 <= port <= 65535:
        raise typer.BadParameter(f"port must be between 0 and 65535, not {port}")
    # Imported here so that registering the command keeps `agenthost --help` fast.
    from agenthost.llm.sim_server import run_llm_sim

    run_llm_sim(host, port, settings)
