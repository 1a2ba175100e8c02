"""`agenthost db migrate|status`: the PostgreSQL store's schema, by hand.

Servers migrate at start-up on their own (under an advisory lock, so a fleet may start at
once); these verbs are for deploys that migrate first and start servers with `?migrate=0`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import asyncpg
import typer

from agenthost.core.settings import env_name, is_postgres_url
from agenthost.stores.pg_schema import SchemaTooNew, migrate_schema, schema_status
from agenthost.stores.postgres import split_options

__all__ = ["db_app"]

T = TypeVar("T")

db_app = typer.Typer(no_args_is_help=True)  # its help: agenthost.cli

Store = Annotated[
    str,
    typer.Option(
        "--store",
        envvar=env_name("store"),
        show_envvar=True,
        help="The servers' store URL: postgresql://user:pass@host:port/db.",
    ),
]


def _run(store_url: str, action: Callable[[Any], Awaitable[T]]) -> T:
    if not is_postgres_url(store_url):
        typer.echo(f"agenthost db: {store_url!r} is not a postgresql:// store URL", err=True)
        raise typer.Exit(2)
    dsn, options = split_options(store_url)

    async def run() -> T:
        conn = await asyncpg.connect(dsn, timeout=options["connect_timeout"])
        try:
            return await action(conn)
        finally:
            await conn.close()

    try:
        return asyncio.run(run())
    except SchemaTooNew as exc:
        typer.echo(f"agenthost db: {exc}", err=True)
        raise typer.Exit(1) from None
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        typer.echo(f"agenthost db: cannot reach PostgreSQL: {exc}", err=True)
        raise typer.Exit(1) from None


@db_app.command()
def migrate(store: Store) -> None:
    """Apply the pending schema versions (safe to run from many places at once)."""
    applied = _run(store, migrate_schema)
    status = _run(store, schema_status)
    typer.echo(f"applied {applied or 'nothing'}; {status.describe()}")


@db_app.command()
def status(store: Store) -> None:
    """Show the applied schema version; exit 1 if versions are pending or it is too new."""
    now = _run(store, schema_status)
    typer.echo(now.describe())
    if now.pending or now.too_new:
        raise typer.Exit(1)
