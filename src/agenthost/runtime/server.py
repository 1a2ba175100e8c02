"""Runs the assembled app on uvicorn with uvloop and httptools, after building every part
(store URL, LLM URL, agent import) so a mistake fails at start with a clear message; drains
on the first SIGTERM and exits when the drain completes."""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import sys
from types import FrameType

import uvicorn

from agenthost.core.settings import Settings
from agenthost.observability.logs import configure_logging
from agenthost.runtime.accept import BatchAcceptor
from agenthost.runtime.assembly import assemble
from agenthost.runtime.collector import tune_collector
from agenthost.runtime.connection_limits import ConnectionLimits, OverCapacityGate, raise_file_limit
from agenthost.runtime.connection_shares import ConnectionShares
from agenthost.runtime.listen import bind, bind_problem
from agenthost.runtime.protocols import choose_protocols
from agenthost.runtime.worker_slot import WorkerSlot
from agenthost.turns.drain import Drain

__all__ = ["DrainingServer", "run"]

_STARTUP_FAILURE = 3  # uvicorn's exit status when the app's start-up fails

log = logging.getLogger("agenthost")


def run(settings: Settings, *, worker: WorkerSlot | None = None) -> None:
    """Serve until SIGINT/SIGTERM. A setting that cannot work raises SettingsError (naming
    it) before anything listens; a taken port exits with status 1 in one line. `worker`: this
    process is one of a `--workers` group and serves on its supervisor's listening socket."""
    configure_logging(settings)
    assembly = assemble(settings, worker=worker)
    if worker is not None:
        sock = socket.socket(fileno=worker.listen_fd)
    else:
        try:
            sock = bind(settings.host, settings.port)
        except OSError as exc:
            print(f"agenthost: {bind_problem(settings, exc)}", file=sys.stderr)
            raise SystemExit(1) from None
    if settings.socket_send_buffer:
        # Accepted connections inherit the listening socket's buffer sizes (Linux).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, settings.socket_send_buffer)
    protocols = choose_protocols(settings.server_protocols)
    limits = ConnectionLimits.from_settings(settings, raise_file_limit())
    config = uvicorn.Config(
        OverCapacityGate(assembly.app, assembly.metrics),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        # agenthost's lean protocols when this uvicorn has what they need, else uvicorn's own
        # (agenthost.runtime.protocols); either holds connections to `limits`
        # (agenthost.runtime.connection_limits).
        http=protocols.http_protocol(limits, assembly.metrics),
        timeout_keep_alive=math.ceil(settings.keep_alive_timeout),  # uvicorn takes whole seconds
        ws=protocols.ws,
        ws_max_size=settings.ws_max_frame_bytes,  # larger frames: closed with 1009
        ws_ping_interval=20.0,  # heartbeats: a dead peer is noticed within 40 s
        ws_ping_timeout=20.0,
        lifespan="on",
        access_log=False,  # agenthost's access lines carry the request ids (observability.logs)
        log_config=None,  # uvicorn's own lines go through agenthost's logging too
        # Nothing here reads the client address; skipping the proxy-header rewrite saves
        # work on every request.
        proxy_headers=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=math.ceil(settings.turn_timeout),
    )
    # Everything loaded so far is frozen; young objects are collected in short walks
    # (agenthost.runtime.collector says why and what they cost).
    tune_collector()
    server = DrainingServer(
        config,
        assembly.drain,
        batch_accept=protocols.batch_accept,
        listen_socket=sock,
        worker=worker,
    )
    log.info(
        "agenthost %sserving on http://%s:%d (agent %s, store %s, llm %s)",
        "" if worker is None else f"process {worker.index} ",
        settings.host,
        settings.port,
        settings.app or "the built-in demo agent",
        assembly.engine.store.url,
        settings.llm,
    )
    server.run()


class DrainingServer(uvicorn.Server):
    """uvicorn, except that the first SIGTERM/SIGINT drains before exiting (in-flight turns
    finish and commit) and a second one exits at once; a drain started any other way (POST
    /admin/drain) ends the process the same way."""

    def __init__(
        self,
        config: uvicorn.Config,
        drain: Drain,
        *,
        batch_accept: bool,
        listen_socket: socket.socket | None = None,
        worker: WorkerSlot | None = None,
    ) -> None:
        super().__init__(config)
        self.drain = drain
        self.batch_accept = batch_accept
        self.listen_socket = listen_socket  # bound already (`bind`); None: uvicorn binds
        self.worker = worker  # one of a `--workers` group: accept only this process's share
        self._exit_when_drained: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._exit_when_drained = asyncio.create_task(self._exit_after_drain())
        if sockets is None and self.listen_socket is not None and not self.batch_accept:
            sockets = [self.listen_socket]
        if sockets is not None or not self.batch_accept:
            # Handed sockets by a process manager, or batch accept is off: uvicorn's own way.
            await super().startup(sockets)
            return
        await self._startup_batch_accept()

    async def _startup_batch_accept(self) -> None:
        """uvicorn's start-up, except that the listening socket's connections are accepted in
        batches (`agenthost.runtime.accept`): uvloop's own server fell 1,000 connections
        behind under a load of streams."""
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(_STARTUP_FAILURE)
        config = self.config
        sock = self.listen_socket or config.bind_socket()
        sock.listen(config.backlog)
        state = self.lifespan.state

        def protocol() -> asyncio.Protocol:
            made: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=state
            )
            return made

        shares = None
        if self.worker is not None:
            connections = self.server_state.connections
            shares = ConnectionShares(
                self.worker.connections_path(),
                self.worker.index,
                self.worker.count,
                lambda: len(connections),
            )
        acceptor = BatchAcceptor(asyncio.get_running_loop(), sock, protocol, shares)
        self.servers = [acceptor]  # type: ignore[list-item]
        self.started = True

    async def _exit_after_drain(self) -> None:
        await self.drain.drained()
        self.should_exit = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        drain = self.drain
        if drain.started:
            self.should_exit = True
            self.force_exit = True
            return
        # Signal handlers run between bytecodes of the loop's thread: hand over to the loop.
        asyncio.get_running_loop().call_soon_threadsafe(drain.start, f"signal {sig}")
