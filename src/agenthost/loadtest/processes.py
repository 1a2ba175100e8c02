"""One load test spread over several client processes, each with its own event loop.

A single Python client saturates a core long before a server fleet does: at 10,000 sessions
its event loop runs late and stamps every answer late, which reads as server latency. With
`--processes N` the sessions are shared out over N processes started afresh (spawn), each
ramping its share over the whole ramp, sending and verifying its own sessions; their
measurements come back over a pipe and make one report, as if one process had run them all
(`runner.build_report`). Ctrl-C reaches every process of the terminal's group, so each stops
early and verifies what it sent; a SIGTERM to this process is passed on to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import signal
from collections.abc import Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import FrameType

import msgspec

from agenthost.loadtest.config import LoadConfig
from agenthost.loadtest.report import LoadReport
from agenthost.loadtest.runner import RunData, build_report, collect

__all__ = ["run_in_processes", "shares", "tune_client_process"]


def tune_client_process() -> None:
    """uvloop where installed, and a collector that leaves what exists alone: a full
    collection of the client's own bookkeeping would show up as server latency."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    gc.freeze()
    gc.set_threshold(100_000, 50, 1_000_000)


def shares(sessions: int, processes: int) -> list[int]:
    """`sessions` dealt out over at most `processes` processes, none of them empty."""
    used = max(1, min(processes, sessions))
    return [sessions // used + (1 if i < sessions % used else 0) for i in range(used)]


def _client(config_json: bytes, out: Connection) -> None:
    tune_client_process()
    config = msgspec.json.decode(config_json, type=LoadConfig)
    out.send_bytes(msgspec.msgpack.encode(asyncio.run(collect(config))))
    out.close()


@contextlib.contextmanager
def _signals_passed_on(children: list[BaseProcess]) -> Iterator[None]:
    """While the children run: Ctrl-C is theirs (they are in the terminal's process group),
    and a SIGTERM sent to this process alone is passed on to each."""

    def terminate(_: int, __: FrameType | None) -> None:
        for child in children:
            if child.pid is not None and child.is_alive():
                child.terminate()

    previous = (signal.signal(signal.SIGINT, signal.SIG_IGN),
                signal.signal(signal.SIGTERM, terminate))  # fmt: skip
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def run_in_processes(config: LoadConfig, processes: int) -> LoadReport:
    """Run `config` over `processes` client processes and return the one verified report."""
    context = multiprocessing.get_context("spawn")
    children: list[BaseProcess] = []
    pipes: list[Connection] = []
    for i, share in enumerate(shares(config.sessions, processes)):
        part = msgspec.structs.replace(
            config,
            sessions=share,
            seed=config.seed + i,
            session_prefix=f"{config.session_prefix}{i}",
        )
        reader, writer = context.Pipe(duplex=False)
        child = context.Process(
            target=_client, args=(msgspec.json.encode(part), writer), name=f"loadtest-{i}"
        )
        child.start()
        writer.close()
        children.append(child)
        pipes.append(reader)
    parts: list[RunData] = []
    with _signals_passed_on(children):
        for each, reader in zip(children, pipes, strict=True):
            try:
                parts.append(msgspec.msgpack.decode(reader.recv_bytes(), type=RunData))
            except EOFError:
                each.join()
                for other in children:
                    other.terminate()
                raise RuntimeError(
                    f"load client process {each.name} ended without a report "
                    f"(exit code {each.exitcode})"
                ) from None
            each.join()
    return build_report(config, parts)
