"""`agenthost keys create|list|revoke`: API keys for `--auth keys`, kept in the store's backend
(the same `--store` URL the servers use)."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from agenthost.auth.keys import KeyRecord, KeyStore, new_key
from agenthost.auth.keystores import create_key_store
from agenthost.auth.principal import TenantLimits, default_burst
from agenthost.core.errors import AgentHostError
from agenthost.core.settings import Settings, env_name

__all__ = ["keys_app"]

T = TypeVar("T")

keys_app = typer.Typer(no_args_is_help=True)  # its help: agenthost.cli
console = Console()

Store = Annotated[
    str,
    typer.Option(
        "--store",
        envvar=env_name("store"),
        show_envvar=True,
        help="The session store URL the servers use (sqlite:///path.db, redis://..., postgresql://...).",
    ),
]
_DEFAULT_STORE = Settings().store


def _run(store_url: str, action: Callable[[KeyStore], Awaitable[T]]) -> T:
    if store_url.startswith("memory:"):
        console.print("[red]agenthost keys: a memory:// store lives in one server process; "
                      "use the servers' sqlite:// or redis:// store[/red]")  # fmt: skip
        raise typer.Exit(2)

    async def run() -> T:
        keys = create_key_store(store_url)
        await keys.open()
        try:
            return await action(keys)
        finally:
            await keys.close()

    try:
        return asyncio.run(run())
    except (AgentHostError, ValueError) as exc:
        console.print(f"[red]agenthost keys: {exc}[/red]")
        raise typer.Exit(1) from None


@keys_app.command()
def create(
    tenant: Annotated[str, typer.Option(help="The tenant the key acts for.")],
    turns_per_minute: Annotated[
        int, typer.Option(help="Turns per minute this key's tenant may start (0 = no limit).")
    ] = 0,
    burst: Annotated[
        int | None,
        typer.Option(
            help="Turns allowed back to back within the rate, so a person typing or a client "
            "retrying is not refused (default: 10, or the rate if smaller; 1 = evenly spaced).",
            show_default=False,
        ),
    ] = None,
    max_inflight: Annotated[
        int, typer.Option(help="Turns the tenant may run at once (0 = no limit).")
    ] = 0,
    name: Annotated[str, typer.Option(help="A note to recognise the key by.")] = "",
    store: Store = _DEFAULT_STORE,
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    try:
        chosen = default_burst(turns_per_minute) if burst is None else max(1, burst)
        limits = TenantLimits(turns_per_minute, chosen, max_inflight)
        key, record = new_key(tenant, limits, name)
    except AgentHostError as exc:
        console.print(f"[red]agenthost keys: {exc}[/red]")
        raise typer.Exit(2) from None
    _run(store, lambda keys: keys.add(record))
    typer.echo(key)
    typer.echo(
        f"# key id {record.key_id}, tenant {record.tenant}: keep the key, it is not shown again",
        err=True,
    )


@keys_app.command("list")
def list_keys(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    store: Store = _DEFAULT_STORE,
) -> None:
    """List keys (never the keys themselves): id, tenant, limits, created, revoked."""
    records: list[KeyRecord] = _run(store, lambda keys: keys.list(tenant))
    table = Table("key id", "tenant", "name", "turns/min", "burst", "in flight", "created",
                  "revoked")  # fmt: skip
    for r in records:
        table.add_row(
            r.key_id,
            r.tenant,
            r.name,
            str(r.limits.turns_per_minute or "-"),
            str(r.limits.burst),
            str(r.limits.max_inflight or "-"),
            _when(r.created_at),
            _when(r.revoked_at) if r.revoked_at else "",
        )
    Console(width=200).print(table)


@keys_app.command()
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (from create or list).")],
    store: Store = _DEFAULT_STORE,
) -> None:
    """Revoke a key: servers refuse it within --auth-cache-ttl seconds."""
    if not _run(store, lambda keys: keys.revoke(key_id)):
        console.print(f"[red]agenthost keys: no active key {key_id}[/red]")
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


def _when(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")
