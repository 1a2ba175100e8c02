"""The `agenthost` command: `serve` runs the server; other verbs are registered from their
own modules (`llm-sim`, `loadtest`).

Every `serve` flag is also an `AGENTHOST_*` environment variable (flag wins); `--help` shows
both with the default.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from typing import Annotated, Any

import typer

from agenthost.core.settings import SETTINGS_HELP, Settings, env_name

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


def _serve(**values: Any) -> None:
    """Run the agenthost server (uvicorn, uvloop, httptools) for the agent APP."""
    from agenthost.runtime.server import run

    try:
        settings = Settings(**values)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    run(settings)


def _serve_parameters() -> list[inspect.Parameter]:
    """One option per Settings field (the agent spec is the positional APP): adding a field
    to Settings adds its flag and env var here."""
    hints = typing.get_type_hints(Settings)
    params = [
        inspect.Parameter(
            "app",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=Annotated[
                hints["app"],
                typer.Argument(
                    metavar="[APP]",
                    envvar=env_name("app"),
                    help=SETTINGS_HELP["app"],
                    show_envvar=True,
                ),
            ],
            default=_D.app,
        )
    ]
    for field in Settings.__struct_fields__:
        if field == "app":
            continue
        params.append(
            inspect.Parameter(
                field,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=Annotated[hints[field], _opt(field)],
                default=getattr(_D, field),
            )
        )
    return params


_serve.__signature__ = inspect.Signature(_serve_parameters())  # type: ignore[attr-defined]
_serve.__annotations__ = {p.name: p.annotation for p in _serve_parameters()}
serve = app.command("serve")(_serve)


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


def _register_k8s() -> None:
    from agenthost.k8s.cli import k8s_app

    app.add_typer(k8s_app, name="k8s")


_register_k8s()


def _register_keys() -> None:
    from agenthost.auth.cli import keys_app

    app.add_typer(keys_app, name="keys")


_register_keys()


def _register_db() -> None:
    from agenthost.stores.db_cli import db_app

    app.add_typer(db_app, name="db")


_register_db()


def main() -> None:
    """Console-script entry point."""
    app()
