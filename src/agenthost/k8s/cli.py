"""`agenthost k8s check|prestop`: validate the Kubernetes manifests (in CI too), and the
preStop hook the Deployment runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agenthost.k8s.prestop import DEFAULT_DELAY

__all__ = ["k8s_app"]

k8s_app = typer.Typer(no_args_is_help=True)  # its help: agenthost.cli


@k8s_app.command()
def check(
    overlay: Annotated[
        list[str] | None,
        typer.Option(
            "--overlay",
            help="An overlay name under DIR/overlays, or a path to a kustomization "
            "directory; repeat for several. Default: every overlay.",
        ),
    ] = None,
    directory: Annotated[
        Path, typer.Option("--dir", help="The kustomize tree: base/, overlays/, components/.")
    ] = Path("deploy/kubernetes"),
    kubernetes_version: Annotated[
        str | None,
        typer.Option(help="Kubernetes version whose API schemas the objects must satisfy."),
    ] = None,
    adapter_values: Annotated[
        Path | None,
        typer.Option(
            help="prometheus-adapter values or config holding the HPA metric's rule. "
            "Default: DIR/prometheus-adapter/values.yaml when present."
        ),
    ] = None,
) -> None:
    """Validate the overlays and check them against the code; exit 1 on any problem.

    Renders each overlay with `kubectl kustomize`, validates every object (Kubernetes API
    schemas; the project's schemas for KEDA and prometheus-operator resources) and checks
    settings, probes, ports, drain timing, references and metric names.
    """
    try:
        import kubernetes_validate  # type: ignore[import-untyped]  # noqa: F401
        import yaml  # noqa: F401
    except ImportError as exc:
        typer.echo(
            f"agenthost k8s check needs {exc.name}: pip install kubernetes-validate pyyaml",
            err=True,
        )
        raise typer.Exit(2) from None
    from agenthost.k8s.check import check_overlays, default_adapter_values
    from agenthost.k8s.validate import DEFAULT_KUBERNETES_VERSION

    version = kubernetes_version or DEFAULT_KUBERNETES_VERSION
    adapter = adapter_values or default_adapter_values(directory)
    reports = check_overlays(directory, overlay, version, adapter)
    failed = False
    for report in reports:
        if report.problems:
            failed = True
            typer.echo(f"{report.name}: {len(report.problems)} problem(s)")
            for problem in report.problems:
                typer.echo(f"  {problem.subject}: {problem.message}")
        else:
            typer.echo(f"{report.name}: {report.objects} objects valid for Kubernetes {version}")
    if failed:
        raise typer.Exit(1)


@k8s_app.command()
def prestop(
    delay: Annotated[
        float, typer.Option(help="Seconds to keep serving first, while the pod's endpoint "
                            "removal reaches the Ingress.")
    ] = DEFAULT_DELAY,
) -> None:  # fmt: skip
    """The pods' preStop hook: wait, drain the server, return once it has exited.

    Waits DELAY seconds, starts the drain with POST /admin/drain and the admin token, and
    returns when the server stops listening. Reads the server's AGENTHOST_* variables.
    """
    from agenthost.core.settings import Settings
    from agenthost.k8s.prestop import prestop as run_prestop

    try:
        settings = Settings.from_env()
    except ValueError as exc:
        typer.echo(f"agenthost prestop: {exc}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(run_prestop(settings, delay, log=lambda m: typer.echo(m, err=True)))
