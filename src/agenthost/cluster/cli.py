"""`agenthost cluster up|status|scale|rollout|down`: the local fleet from the command line."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from agenthost.cluster import fleet
from agenthost.cluster.autoscaler import parse_spec, run_autoscaler

__all__ = ["cluster_app"]

cluster_app = typer.Typer(no_args_is_help=True)  # its help: agenthost.cli
console = Console()

Dir = Annotated[
    str, typer.Option("--dir", envvar="AGENTHOST_CLUSTER_DIR", help="Where the cluster keeps "
                      "its state, logs and HAProxy config.")
]  # fmt: skip


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]agenthost cluster: {exc}[/red]")
    return typer.Exit(1)


@cluster_app.command()
def up(
    replicas: Annotated[int, typer.Option(help="agenthost processes to start.")] = 2,
    workers: Annotated[
        int,
        typer.Option(
            help="Worker processes (--role worker); with any, the replicas run "
            "--role api and queue turns for them."
        ),
    ] = 0,
    port: Annotated[int, typer.Option(help="HAProxy's port: the fleet's address.")] = 8080,
    store: Annotated[
        str | None, typer.Option(help="Session store URL; default: start a redis-server.")
    ] = None,
    llm: Annotated[str, typer.Option(help="The replicas' --llm.")] = "sim://",
    app: Annotated[str | None, typer.Option(help="The replicas' agent (module:attr).")] = None,
    drain_timeout: Annotated[float, typer.Option(help="The replicas' --drain-timeout.")] = 30.0,
    autoscale: Annotated[
        str | None,
        typer.Option(
            help="min=N,max=N,target=V: stay in the foreground and scale on the "
            "per-replica average of --autoscale-metric (the Kubernetes HPA rules)."
        ),
    ] = None,
    autoscale_metric: Annotated[str, typer.Option()] = "agenthost_active_connections",
    sync_period: Annotated[float, typer.Option(help="Seconds between autoscaler runs.")] = 15.0,
    directory: Dir = ".agenthost-cluster",
) -> None:
    """Start the fleet: redis-server (unless --store), HAProxy, then the replicas."""
    env = {"AGENTHOST_LLM": llm}
    if app:
        env["AGENTHOST_APP"] = app
    try:
        if autoscale:
            parse_spec(autoscale)
        fleet.up(directory, replicas=replicas, port=port, store=store, serve_env=env,
                 drain_timeout=drain_timeout, workers=workers)  # fmt: skip
    except (RuntimeError, ValueError, OSError) as exc:
        raise _fail(exc) from None
    console.print(f"fleet up: http://127.0.0.1:{port}")
    console.print(
        f"playground: http://127.0.0.1:{port}/playground · dashboard: "
        f"http://127.0.0.1:{port}/dashboard (admin token: admin_token in "
        f"{directory}/cluster.json)"
    )
    if autoscale:
        try:
            run_autoscaler(directory, autoscale, metric=autoscale_metric, period=sync_period)
        except KeyboardInterrupt:
            console.print("autoscaler stopped; the fleet keeps running")


@cluster_app.command()
def status(directory: Dir = ".agenthost-cluster") -> None:
    """A table: replica, pid, port, ready, HAProxy state, connections, in-flight turns."""
    try:
        state, rows = fleet.status(directory)
    except (FileNotFoundError, RuntimeError) as exc:
        raise _fail(exc) from None
    table = Table(title=f"agenthost fleet on http://127.0.0.1:{state.port} ({state.store})")
    for column in ("replica", "pid", "port", "ready", "haproxy", "connections", "in-flight"):
        table.add_column(column)
    for row in rows:
        r = row.replica
        name = f"w{r.slot}" if row.lb_status == "worker" else f"r{r.slot}"
        table.add_row(name, str(r.pid), str(r.port), "yes" if row.ready else "no",
                      row.lb_status, str(row.connections), str(row.inflight))  # fmt: skip
    console.print(table)


@cluster_app.command(name="scale")
def scale_command(
    replicas: Annotated[int, typer.Argument(help="The number of replicas to run.")],
    workers: Annotated[
        int | None, typer.Option(help="The number of worker processes to run.")
    ] = None,
    directory: Dir = ".agenthost-cluster",
) -> None:
    """Add replicas (and workers), or drain the newest ones (in-flight turns commit
    first; a drained worker hands back what it could not finish)."""
    try:
        if workers is not None:
            fleet.scale_workers(directory, workers)
        fleet.scale(directory, replicas)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        raise _fail(exc) from None


@cluster_app.command()
def rollout(directory: Dir = ".agenthost-cluster") -> None:
    """Replace every replica, then every worker, one by one (maxSurge 1, maxUnavailable 0)."""
    try:
        fleet.rollout(directory)
    except (FileNotFoundError, RuntimeError) as exc:
        raise _fail(exc) from None


@cluster_app.command()
def down(directory: Dir = ".agenthost-cluster") -> None:
    """Drain every replica, then stop HAProxy and the redis-server it started."""
    try:
        fleet.down(directory)
    except (FileNotFoundError, RuntimeError) as exc:
        raise _fail(exc) from None
