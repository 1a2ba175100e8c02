"""Runs the ASGI app on uvicorn with uvloop and httptools, after checking the settings can
work (store URL, LLM URL, agent import) so a mistake fails at start with a clear message."""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import socket
import sys
from types import FrameType

import uvicorn

from agenthost.accept import BatchAcceptor
from agenthost.agents import load_agent
from agenthost.app import build_app
from agenthost.drain import Drain
from agenthost.llm import create_llm
from agenthost.logs import configure_logging
from agenthost.settings import Settings
from agenthost.stores import create_store
from agenthost.tracing import create_tracing
from agenthost.ws_protocol import LeanHttpToolsProtocol, LeanWebSocketProtocol

__all__ = ["run"]

_STARTUP_FAILURE = 3  # uvicorn's exit status when the app's start-up fails

log = logging.getLogger("agenthost")


def run(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM. Exits with status 2 on a configuration error."""
    configure_logging(settings)
    try:
        agent = load_agent(settings.app)
        store = create_store(settings.store)
        llm = create_llm(
            settings.llm,
            model=settings.llm_model,
            api_key=settings.llm_api_key,
            transport=settings.llm_transport,
        )
        tracing = create_tracing(settings.otel)
    except (ValueError, TypeError) as exc:
        print(f"agenthost: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    app = build_app(settings, store=store, agent=agent, llm=llm, tracing=tracing)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        # uvicorn's httptools protocol, freed at once when a connection becomes a WebSocket.
        http=LeanHttpToolsProtocol,
        # uvicorn's sans-I/O protocol, minus the handshake it would keep per connection.
        ws=LeanWebSocketProtocol,
        ws_max_size=settings.ws_max_frame_bytes,  # larger frames: closed with 1009
        ws_ping_interval=20.0,  # heartbeats: a dead peer is noticed within 40 s
        ws_ping_timeout=20.0,
        lifespan="on",
        access_log=False,  # agenthost.logs writes the access lines, with the request ids
        log_config=None,  # uvicorn's own lines go through agenthost.logs too
        # Nothing here reads the client address; skipping the proxy-header rewrite saves
        # work on every request.
        proxy_headers=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=math.ceil(settings.turn_timeout),
    )
    # Everything loaded so far lives as long as the process: keep it out of the garbage
    # collector's full passes, whose pauses would otherwise land on some turn's latency.
    gc.freeze()
    # Thousands of turns in flight keep many young objects alive; collecting them 700
    # allocations at a time costs more than the garbage it finds. Collect less often.
    gc.set_threshold(50_000, 20, 100)
    server = DrainingServer(config)
    # A drain started by POST /admin/drain ends the process the same way as one from SIGTERM.
    app.state.exit_process = server.exit_when_drained
    log.info(
        "agenthost serving on http://%s:%d (store %s, llm %s)",
        settings.host,
        settings.port,
        store.url,
        settings.llm,
    )
    server.run()


class DrainingServer(uvicorn.Server):
    """uvicorn, except that the first SIGTERM/SIGINT drains before exiting (in-flight turns
    finish and commit) and a second one exits at once."""

    drain: Drain | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's start-up, except that the listening socket's connections are accepted in
        batches (`agenthost.accept`): uvloop's own server fell 1,000 connections behind
        under a load of streams."""
        if sockets is not None:  # handed in by a process manager: uvicorn's own way
            await super().startup(sockets)
            return
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(_STARTUP_FAILURE)
        config = self.config
        sock = config.bind_socket()
        sock.listen(config.backlog)
        state = self.lifespan.state

        def protocol() -> asyncio.Protocol:
            made: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=state
            )
            return made

        self.servers = [BatchAcceptor(asyncio.get_running_loop(), sock, protocol)]  # type: ignore[list-item]
        self.started = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        drain = self.drain
        if drain is None or drain.started:
            self.should_exit = True
            self.force_exit = drain is not None
            return
        # Signal handlers run between bytecodes of the loop's thread: hand over to the loop.
        asyncio.get_running_loop().call_soon_threadsafe(drain.start, f"signal {sig}")

    def exit_when_drained(self, drain: Drain) -> None:
        """Called by the app's lifespan with its drain: when it completes, exit."""
        self.drain = drain
        drain.on_drained = self._drained

    def _drained(self) -> None:
        self.should_exit = True
