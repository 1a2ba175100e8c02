"""The `agenthost loadtest` command (registered by `agenthost.cli`)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.text import Text

from agenthost.loadtest.config import Background, ClientKind, LoadConfig, Mode
from agenthost.loadtest.plot import write_plot
from agenthost.loadtest.processes import run_in_processes, tune_client_process
from agenthost.loadtest.report import LoadReport, report_table
from agenthost.loadtest.runner import Progress, run_load

__all__ = ["loadtest"]


def _line(p: Progress) -> Text:
    p50, p99 = p.recent_percentiles()
    elapsed = max(time.monotonic() - p.started, 1e-9)
    return Text(
        f"{elapsed:6.1f} s  answered {p.answered}  in flight {p.inflight}  "
        f"{p.answered / elapsed:7.1f} turns/s  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  "
        f"retries {p.retries}  failed {p.failed}"
    )


def loadtest(
    url: Annotated[
        str, typer.Option(help="The server (or load balancer), e.g. http://127.0.0.1:8000.")
    ],
    mode: Annotated[Mode, typer.Option(help="http, sse (streamed) or ws (WebSocket).")] = "http",
    background: Annotated[
        Background,
        typer.Option(
            help="poll or stream: send background turns (202) and read each answer "
            "by polling its status or from its stream; off: --mode."
        ),
    ] = "off",
    client: Annotated[
        ClientKind,
        typer.Option(
            help="lean: --mode http turns to an http:// URL go over agenthost's own "
            "keep-alive client (a fraction of aiohttp's CPU per turn); aiohttp: every turn "
            "over aiohttp."
        ),
    ] = "lean",
    sessions: Annotated[int, typer.Option(help="Concurrent sessions.")] = 100,
    turns: Annotated[int, typer.Option(help="Turns per session (unless --duration).")] = 3,
    duration: Annotated[
        float | None, typer.Option(help="Run this many seconds instead of --turns.")
    ] = None,
    think: Annotated[
        float, typer.Option(help="Mean seconds between a session's turns (+-50%).")
    ] = 0.0,
    ramp: Annotated[float, typer.Option(help="Seconds over which the sessions start.")] = 0.0,
    on_busy: Annotated[str, typer.Option(help="reject, enqueue or interrupt.")] = "enqueue",
    payload_bytes: Annotated[int, typer.Option(help="Padding added to every message.")] = 0,
    api_key: Annotated[
        str | None, typer.Option(envvar="AGENTHOST_API_KEY", help="Sent as a bearer token.")
    ] = None,
    max_retries: Annotated[
        int, typer.Option(help="Retries of a transient failure, same Idempotency-Key.")
    ] = 8,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the report as JSON here.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Write latency and throughput over time (PNG).")
    ] = None,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Read every history back and check it.")
    ] = True,
    seed: Annotated[int, typer.Option(help="Seed of think times and backoff jitter.")] = 0,
    quiet: Annotated[bool, typer.Option(help="No live display.")] = False,
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            help="Client processes to spread the sessions over, each with its own event "
            "loop: more when a run warns that the load generator is saturated.",
        ),
    ] = 1,
) -> None:
    """Drive sessions at a server and verify afterwards that nothing was lost, duplicated,
    reordered or mismatched. Exits 1 if anything was, or if a turn failed for good.
    Ctrl-C (or SIGTERM) ends the run early: the turns in flight finish and are verified."""
    try:
        config = LoadConfig(
            url=url, mode=mode, background=background, client=client, sessions=sessions,
            turns=turns,
            duration=duration, think=think,
            ramp=ramp, on_busy=on_busy, payload_bytes=payload_bytes,  # type: ignore[arg-type]
            api_key=api_key, max_retries=max_retries, verify=verify, seed=seed,
        )  # fmt: skip
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    console = Console(stderr=True)
    progress = Progress()
    live = not quiet and sys.stderr.isatty()
    tune_client_process()
    if processes > 1:
        report: LoadReport = run_in_processes(config, processes)
    elif live:
        with Live(_line(progress), console=console, refresh_per_second=2) as display:
            report = asyncio.run(
                run_load(config, progress, on_tick=lambda: display.update(_line(progress)))
            )
    else:
        report = asyncio.run(run_load(config, progress))
    Console().print(report_table(report))
    for warning in report.warnings:
        console.print(f"[yellow]warning: {warning}[/yellow]")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_bytes(report.to_json())
    if plot is not None:
        write_plot(report, plot)
    if not report.ok:
        raise typer.Exit(1)
