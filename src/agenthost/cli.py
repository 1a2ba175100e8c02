"""The `agenthost` command: `serve` runs the server; other verbs are registered from their
own modules (`llm-sim`, `loadtest`).

Every `serve` flag is also an `AGENTHOST_*` environment variable (flag wins); `--help` shows
both with the default.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import shlex
import textwrap
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, NoReturn
from urllib.parse import urlsplit

import typer
from typer.core import TyperCommand, TyperGroup

from agenthost.core.settings import (
    SETTINGS_HELP,
    Settings,
    SettingsError,
    env_name,
    parse_setting,
)

if TYPE_CHECKING:
    from rich.text import Text

__all__ = ["SERVE_PANELS", "app", "main"]


def _function_command(module_name: str, attr: str, name: str, text: str) -> Any:
    """The click command of a typer function in `module_name`."""
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    single.command(name, help=text)(getattr(importlib.import_module(module_name), attr))
    return typer.main.get_command(single)


def _typer_command(module_name: str, attr: str, name: str, text: str) -> Any:
    """The click group of a typer app in `module_name`, as `agenthost <name>`."""
    outer = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    outer.add_typer(getattr(importlib.import_module(module_name), attr), name=name, help=text)
    group: Any = typer.main.get_command(outer)
    return group.commands[name]


class _LazyGroup(TyperGroup):
    """The `agenthost` group: every verb built on first use (`_LAZY_COMMANDS`); its help
    lists them by their help alone."""

    _listing = False  # within format_help: a verb not built yet is shown, not built

    def list_commands(self, ctx: Any) -> list[str]:
        return [
            *_LAZY_COMMANDS,
            *(n for n in super().list_commands(ctx) if n not in _LAZY_COMMANDS),
        ]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        found = super().get_command(ctx, cmd_name)
        if found is None and cmd_name in _LAZY_COMMANDS:
            text, build = _LAZY_COMMANDS[cmd_name]
            if self._listing:
                return TyperCommand(cmd_name, help=text)
            found = build(cmd_name, text)
            self.add_command(found, cmd_name)
        return found

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    cls=_LazyGroup,
    name="agenthost",
    help="Host an AI agent for thousands of concurrent chat sessions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_D = Settings()
_TYPES = typing.get_type_hints(Settings)

SERVE_PANELS: dict[str, tuple[str, ...]] = {
    "Server": (
        "app", "app_dir", "host", "port", "workers", "lease_ttl", "enqueue_timeout",
        "turn_timeout", "drain_timeout", "server_protocols", "header_timeout", "body_timeout",
        "keep_alive_timeout", "max_connections", "detailed_errors",
    ),
    "Store": (
        "store", "store_read_replica", "cache", "cache_ttl", "session_ttl", "retention",
        "history_window", "window_cache_mb",
    ),
    "LLM": (
        "llm", "llm_model", "llm_api_key", "llm_transport", "llm_cache", "llm_cache_ttl",
        "openai_model", "openai_task_model",
    ),
    "Streams": (
        "broker", "stream_ttl", "chunk_coalesce_ms", "sse_heartbeat_s", "ws_send_buffer",
        "ws_send_buffer_bytes", "ws_slow_consumer_grace", "ws_idle_timeout",
        "socket_send_buffer",
    ),
    "Limits": (
        "max_inflight_turns", "max_body_bytes", "max_message_chars", "max_metadata_bytes",
        "max_metadata_depth", "ws_max_frame_bytes", "ws_max_frames_per_s",
        "rate_limit_turns_per_minute", "rate_limit_burst", "rate_limit_max_inflight",
        "rate_limiter",
    ),
    "Auth": (
        "auth", "allow_no_auth", "auth_cache_ttl", "jwt_secret", "jwt_public_key",
        "jwt_tenant_claim", "jwt_audience", "jwt_issuer", "admin_token",
        "metrics_require_admin", "cors_origins",
    ),
    "Observability": ("log_level", "log_format", "log_content", "access_log", "otel"),
    "Pages": ("playground", "heartbeat_interval", "grafana_url"),
    "Queue": (
        "role", "worker_concurrency", "max_queued_turns", "tenant_classes", "callback_secret",
        "callback_allow_private",
    ),
}  # fmt: skip
"""Where each setting shows in `serve --help`: every field in exactly one panel."""

_LIST_FIELDS = frozenset(f for f, kind in _TYPES.items() if typing.get_origin(kind) is list)
_SECRETS = frozenset({"llm_api_key", "jwt_secret", "admin_token", "callback_secret"})
_URLS = frozenset({"store", "cache", "llm", "llm_cache", "broker", "rate_limiter"})


@app.callback()
def _root() -> None:
    """Host an AI agent for thousands of concurrent chat sessions."""


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _is_bool(field: str) -> bool:
    return _TYPES[field] is bool


def _metavar(field: str) -> str:
    if field in _URLS:
        return "URL"
    kind = _TYPES[field]
    return {int: "INTEGER", float: "NUMBER"}.get(kind, "TEXT")


def _opt(field: str) -> Any:
    """The Typer option of a settings field. Values stay text here: the environment is read
    and every value converted in `_settings_from`, so an error names where it came from."""
    if _is_bool(field):
        return typer.Option(f"{_flag(field)}/--no-{_flag(field)[2:]}", help=SETTINGS_HELP[field])
    return typer.Option(_flag(field), help=SETTINGS_HELP[field], metavar=_metavar(field))


def _shown(field: str, value: object) -> str:
    if value is None:
        return "unset"
    if field in _SECRETS:
        return "***"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if field in _URLS:
        parts = urlsplit(text)
        if parts.password is not None:
            text = text.replace(":" + parts.password + "@", ":***@", 1)
    return shlex.quote(text)


def _given(field: str, value: object, origin: str) -> str:
    """What was given and where: `--port notanumber`, `AGENTHOST_PORT=x`, `--auth none (the
    default)`."""
    if origin == "env":
        return f"{env_name(field)}={_shown(field, value)}"
    if field == "app":
        where = f"agent {_shown(field, value)}"
    elif isinstance(value, bool):
        where = _flag(field) if value else "--no-" + _flag(field)[2:]
    else:
        where = f"{_flag(field)} {_shown(field, value)}"
    return where + (" (the default)" if origin == "default" else "")


def _settings_from(flags: dict[str, Any], environ: dict[str, str]) -> Settings:
    """Defaults, then `AGENTHOST_*` variables, then flags; typer.Exit(2) with one line per
    problem, each naming the value given and its origin."""
    raw: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for field in Settings.__struct_fields__:
        if flags.get(field) not in (None, [], ()):
            raw[field], origins[field] = flags[field], "flag"
        elif environ.get(env_name(field)):
            raw[field], origins[field] = environ[env_name(field)], "env"
    problems: list[tuple[str, str]] = []
    values: dict[str, Any] = {}
    for field, value in raw.items():
        try:
            values[field] = parse_setting(field, value) if isinstance(value, str) else value
        except SettingsError as exc:
            problems += exc.problems
    try:
        if not problems:
            return Settings(**values)
    except SettingsError as exc:
        problems = exc.problems
    _fail(problems, raw, origins)


def _fail(
    problems: list[tuple[str, str]], raw: dict[str, Any], origins: dict[str, str]
) -> NoReturn:
    for field, message in problems:
        value = raw.get(field, getattr(_D, field))
        given = _given(field, value, origins.get(field, "default"))
        typer.echo(f"agenthost: {given}: {message}", err=True)
    raise typer.Exit(2)


def _serve(**values: Any) -> None:
    """Run the agenthost server (uvicorn, uvloop, httptools) for the agent APP."""
    from agenthost.core.settings import worker_count

    environ = dict(os.environ)
    settings = _settings_from(values, environ)
    try:
        # Each imported only where it runs: a supervisor serves nothing, so it does not load
        # uvicorn and the protocols.
        if worker_count(settings) > 1:
            from agenthost.runtime.supervisor import supervise

            supervise(settings)
        else:
            from agenthost.runtime.server import run

            run(settings)
    except SettingsError as exc:
        flags = {k: v for k, v in values.items() if v is not None}
        origins = {f: "flag" if f in flags else "env" for f in Settings.__struct_fields__
                   if f in flags or environ.get(env_name(f))}  # fmt: skip
        raw = {f: getattr(settings, f) for f in Settings.__struct_fields__}
        _fail(exc.problems, raw, origins)


def _serve_parameters() -> list[inspect.Parameter]:
    """One option per Settings field (the agent spec is the positional APP): adding a field
    to Settings adds its flag and env var here."""
    params = [
        inspect.Parameter(
            "app",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=Annotated[
                str | None, typer.Argument(metavar="[APP]", help=SETTINGS_HELP["app"])
            ],
            default=None,
        )
    ]
    for field in Settings.__struct_fields__:
        if field == "app":
            continue
        kind: Any = str | None
        if _is_bool(field):
            kind = bool | None
        elif field in _LIST_FIELDS:
            kind = list[str] | None  # repeatable: --store-read-replica A --store-read-replica B
        params.append(
            inspect.Parameter(
                field,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=Annotated[kind, _opt(field)],
                default=None,
            )
        )
    return params


class _ServeCommand(TyperCommand):
    """`serve --help`: the settings in panels, each option's flag, type and environment
    variable on one line (whole), its description and default under it."""

    def format_help(self, ctx: Any, formatter: Any) -> None:  # typer's own click types
        # rich only here: a server that starts does not pay for its import.
        from rich.console import Console
        from rich.panel import Panel

        width = min(Console().width, 100)
        console = Console(width=width, highlight=False, soft_wrap=False)
        name = ctx.info_name or "serve"
        console.print(f"Usage: agenthost {name} [OPTIONS] [APP]\n")
        what = (
            "Run the turns api processes queue, with the agent APP: `agenthost serve --role "
            "worker`."
            if name == "worker"
            else "Serve the agent APP (default: a built-in demo agent) for many concurrent "
            "chat sessions."
        )
        console.print(
            f"{what} Every option is also the environment variable shown beside it; a flag "
            "wins over it.\n"
        )
        for title, fields in SERVE_PANELS.items():
            body = _panel_body(fields, width - 4)
            console.print(
                Panel(body, title=title, title_align="left", border_style="dim", padding=(0, 1))
            )
        console.print(" --help  Show this message and exit.")


def _option_head(field: str) -> str:
    if field == "app":
        return "APP"
    if _is_bool(field):
        return f"{_flag(field)}/--no-{_flag(field)[2:]}"
    return f"{_flag(field)} {_metavar(field)}"


def _shown_default(field: str, default: object) -> str:
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


def _panel_body(fields: tuple[str, ...], inner: int) -> Text:
    from rich.text import Text

    body = Text()
    for n, field in enumerate(fields):
        head, env = _option_head(field), env_name(field)
        default = getattr(_D, field)
        if default not in (None, "") and field not in _SECRETS:
            head += f" [{_shown_default(field, default)}]"
        if n:
            body.append("\n")
        body.append(head, style="bold cyan")
        if len(head) + 2 + len(env) <= inner:
            body.append(" " * (inner - len(head) - len(env)) + env, style="dim")
        else:
            body.append("\n" + " " * (inner - len(env)) + env, style="dim")
        for line in textwrap.wrap(SETTINGS_HELP[field], inner - 4):
            body.append("\n    " + line)
    return body


def _worker(**values: Any) -> None:
    """Run queued turns: `agenthost serve --role worker`, with every serve option."""
    _serve(**{**values, "role": "worker"})


def _serve_command(function: Callable[..., None]) -> Callable[[str, str], Any]:
    """The builder of `serve` or `worker`: one option per setting, made when that verb runs
    (its 150 options are not built for another verb)."""

    def build(name: str, text: str) -> Any:
        params = _serve_parameters()
        function.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        function.__annotations__ = {p.name: p.annotation for p in params}
        single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        single.command(name, cls=_ServeCommand, help=text)(function)
        return typer.main.get_command(single)

    return build


def _from_module(module_name: str, attr: str, *, group: bool) -> Callable[[str, str], Any]:
    """The builder of a verb that lives in its own module, imported when the verb runs."""
    if group:
        return functools.partial(_typer_command, module_name, attr)
    return functools.partial(_function_command, module_name, attr)


# Each verb's help, and how to build it: `agenthost --help` lists them by their help alone,
# and a verb is built (its module imported) only when it runs, so a `serve` does not load the
# load tester's HTTP client, the key stores or the fleet tools.
_LAZY_COMMANDS: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "serve": (inspect.getdoc(_serve) or "", _serve_command(_serve)),
    "worker": (inspect.getdoc(_worker) or "", _serve_command(_worker)),
    "llm-sim": ("Run an OpenAI-compatible simulated LLM server.",
                _from_module("agenthost.llm.cli", "llm_sim", group=False)),
    "loadtest": ("Drive load and verify nothing was lost.",
                 _from_module("agenthost.loadtest.cli", "loadtest", group=False)),
    "cluster": ("A local fleet on real parts: N agenthost processes, redis-server and HAProxy "
                "(least connections, health checks on /readyz, retries of 503s and refused "
                "connections).", _from_module("agenthost.cluster.cli", "cluster_app", group=True)),
    "k8s": ("Kubernetes: check the manifests in deploy/kubernetes; the pods' preStop hook.",
            _from_module("agenthost.k8s.cli", "k8s_app", group=True)),
    "keys": ("API keys for --auth keys: create (shown once), list, revoke. Keys are stored as "
             "SHA-256 hashes in the session store's backend, with the tenant and its limits.",
             _from_module("agenthost.auth.cli", "keys_app", group=True)),
    "db": ("The PostgreSQL store's schema: migrate applies the pending versions (under an "
           "advisory lock), status shows what is applied.",
           _from_module("agenthost.stores.db_cli", "db_app", group=True)),
}  # fmt: skip


def main() -> None:
    """Console-script entry point."""
    app()
