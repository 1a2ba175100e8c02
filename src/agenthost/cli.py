"""The `agenthost` command: `serve` runs the server; other verbs are registered from their
own modules (`llm-sim`, `loadtest`).

Every `serve` flag is also an `AGENTHOST_*` environment variable (flag wins); `--help` shows
both with the default.
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any

import typer

from agenthost.settings import SETTINGS_HELP, Settings, env_name

__all__ = ["app", "main"]

app = typer.Typer(
    name="agenthost",
    help="Host an AI agent for thousands of concurrent chat sessions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_D = Settings()


@app.callback()
def _root() -> None:
    """Host an AI agent for thousands of concurrent chat sessions."""


def _opt(field: str) -> Any:
    """The Typer option of a settings field: same name as a flag and as an env var."""
    return typer.Option(
        "--" + field.replace("_", "-"),
        envvar=env_name(field),
        help=SETTINGS_HELP[field],
        show_envvar=True,
    )


@app.command()
def serve(
    app_spec: Annotated[
        str | None,
        typer.Argument(
            metavar="[APP]",
            envvar=env_name("app"),
            help=SETTINGS_HELP["app"],
            show_envvar=True,
        ),
    ] = None,
    host: Annotated[str, _opt("host")] = _D.host,
    port: Annotated[int, _opt("port")] = _D.port,
    store: Annotated[str, _opt("store")] = _D.store,
    llm: Annotated[str, _opt("llm")] = _D.llm,
    llm_model: Annotated[str | None, _opt("llm_model")] = _D.llm_model,
    llm_api_key: Annotated[str | None, _opt("llm_api_key")] = _D.llm_api_key,
    session_ttl: Annotated[float, _opt("session_ttl")] = _D.session_ttl,
    history_window: Annotated[int, _opt("history_window")] = _D.history_window,
    max_body_bytes: Annotated[int, _opt("max_body_bytes")] = _D.max_body_bytes,
    admin_token: Annotated[str | None, _opt("admin_token")] = _D.admin_token,
    lease_ttl: Annotated[float, _opt("lease_ttl")] = _D.lease_ttl,
    enqueue_timeout: Annotated[float, _opt("enqueue_timeout")] = _D.enqueue_timeout,
    turn_timeout: Annotated[float, _opt("turn_timeout")] = _D.turn_timeout,
    max_inflight_turns: Annotated[int, _opt("max_inflight_turns")] = _D.max_inflight_turns,
    drain_timeout: Annotated[float, _opt("drain_timeout")] = _D.drain_timeout,
    broker: Annotated[str | None, _opt("broker")] = _D.broker,
    stream_ttl: Annotated[float, _opt("stream_ttl")] = _D.stream_ttl,
    chunk_coalesce_ms: Annotated[float, _opt("chunk_coalesce_ms")] = _D.chunk_coalesce_ms,
    ws_send_buffer: Annotated[int, _opt("ws_send_buffer")] = _D.ws_send_buffer,
    ws_idle_timeout: Annotated[float, _opt("ws_idle_timeout")] = _D.ws_idle_timeout,
    log_level: Annotated[str, _opt("log_level")] = _D.log_level,
) -> None:
    """Run the agenthost server (uvicorn, uvloop, httptools) for the agent APP."""
    from agenthost.server import run

    try:
        settings = Settings(
            app=app_spec,
            host=host,
            port=port,
            store=store,
            llm=llm,
            llm_model=llm_model,
            llm_api_key=llm_api_key,
            session_ttl=session_ttl,
            history_window=history_window,
            max_body_bytes=max_body_bytes,
            admin_token=admin_token,
            lease_ttl=lease_ttl,
            enqueue_timeout=enqueue_timeout,
            turn_timeout=turn_timeout,
            max_inflight_turns=max_inflight_turns,
            drain_timeout=drain_timeout,
            broker=broker,
            stream_ttl=stream_ttl,
            chunk_coalesce_ms=chunk_coalesce_ms,
            ws_send_buffer=ws_send_buffer,
            ws_idle_timeout=ws_idle_timeout,
            log_level=log_level,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    run(settings)


_OPTIONAL_COMMANDS = (
    ("agenthost.llm.cli", "llm_sim", "llm-sim", "Run an OpenAI-compatible simulated LLM server."),
    ("agenthost.loadtest.cli", "loadtest", "loadtest", "Drive load and verify nothing was lost."),
)


def _register_optional_commands() -> None:
    """Verbs that live in their own modules, registered when their module is installed."""
    for module_name, attr, name, text in _OPTIONAL_COMMANDS:
        try:
            command = getattr(importlib.import_module(module_name), attr)
        except ImportError:
            continue
        app.command(name, help=text)(command)


_register_optional_commands()


def _register_cluster() -> None:
    from agenthost.cluster.cli import cluster_app

    app.add_typer(cluster_app, name="cluster")


_register_cluster()


def main() -> None:
    """Console-script entry point."""
    app()
