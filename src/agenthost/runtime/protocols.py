"""Which uvicorn protocols a server runs: agenthost's lean ones, or uvicorn's stock ones.

The lean protocols (`agenthost.runtime.lean_protocols`) hold less per WebSocket and write
streamed chunks straight to the socket, but they read and write uvicorn's and websockets'
internals, which change between releases. At start-up `choose_protocols` imports them and
checks that everything they use is there (`lean_protocols_missing`); where the import or the
check fails, the server logs one warning naming what is missing and runs on uvicorn's stock
protocols and start-up: slower, still correct. pyproject.toml bounds uvicorn and websockets
to the releases tried (`make deps-range`). The web layer never sees the protocol classes: it
finds the direct writers through the connection's scope (`agenthost.web.direct_write`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Literal

from agenthost.observability.metrics import Metrics
from agenthost.runtime.connection_limits import ConnectionLimits

__all__ = ["PROTOCOL_CHOICES", "STOCK", "ServerProtocols", "choose_protocols"]

log = logging.getLogger("agenthost.server")

PROTOCOL_CHOICES = ("auto", "stock")
"""`--server-protocols`: `auto` runs the lean protocols where this uvicorn has what they need
(else the stock ones, with a warning); `stock` always runs uvicorn's own."""


@dataclass(frozen=True)
class ServerProtocols:
    """What uvicorn is told to run: protocol classes (or uvicorn's names for its own), and
    whether the server's start-up may accept connections in batches."""

    name: Literal["lean", "stock"]
    http: type[asyncio.Protocol] | str
    ws: type[asyncio.Protocol] | str
    batch_accept: bool
    guard: Callable[[ConnectionLimits, Metrics], type[asyncio.Protocol]] | None = None
    """The HTTP protocol class with connection deadlines and a cap (None: uvicorn's own, none)."""

    def http_protocol(
        self, limits: ConnectionLimits, metrics: Metrics
    ) -> type[asyncio.Protocol] | str:
        """The HTTP protocol to serve with, holding connections to `limits` where it can."""
        return self.http if self.guard is None else self.guard(limits, metrics)


STOCK = ServerProtocols("stock", "httptools", "websockets-sansio", batch_accept=False)


_NO_LIMITS = (
    "no header or body deadline and no connection cap (only the keep-alive timeout holds: put "
    "a proxy with its own timeouts in front), as the connection guard uses what is missing: "
)


def _stock() -> tuple[ServerProtocols, str]:
    """uvicorn's own protocols, its HTTP one with the connection guard where that can run;
    and, where it cannot, why (for the one warning)."""
    try:
        lean = importlib.import_module("agenthost.runtime.lean_protocols")
    except ImportError as exc:
        return STOCK, _NO_LIMITS + str(exc)
    missing = lean.guard_missing()
    if missing:
        return STOCK, _NO_LIMITS + ", ".join(missing)
    return dataclasses.replace(STOCK, guard=lean.ConnectionGuard.configured), ""


def _lean() -> tuple[ServerProtocols | None, str]:
    """The lean protocols, or None and why they cannot run here."""
    try:
        lean = importlib.import_module("agenthost.runtime.lean_protocols")
    except ImportError as exc:  # a private module of uvicorn or websockets moved
        return None, f"cannot import them: {exc}"
    missing = lean.lean_protocols_missing()
    if missing:
        return None, "they use what is missing: " + ", ".join(missing)
    protocols = ServerProtocols(
        "lean",
        lean.LeanHttpToolsProtocol,
        lean.LeanWebSocketProtocol,
        batch_accept=True,
        guard=lean.LeanHttpToolsProtocol.configured,
    )
    return protocols, ""


def choose_protocols(choice: str = "auto") -> ServerProtocols:
    """The protocols to serve with for `--server-protocols` (see `PROTOCOL_CHOICES`)."""
    if choice not in PROTOCOL_CHOICES:
        raise ValueError(
            f"unknown server protocols {choice!r}: expected {' or '.join(PROTOCOL_CHOICES)}"
        )
    if choice == "stock":
        stock, no_limits = _stock()
        if no_limits:
            log.warning("serving on uvicorn's stock protocols, with %s", no_limits)
        else:
            log.info("serving on uvicorn's stock protocols (--server-protocols stock)")
        return stock
    lean, why_not = _lean()
    if lean is None:
        stock, no_limits = _stock()
        log.warning(
            "agenthost's lean protocols cannot run on %s (%s): serving on uvicorn's stock "
            "protocols (correct, but more CPU per chunk and memory per WebSocket)%s",
            _versions(),
            why_not,
            f", with {no_limits}" if no_limits else "",
        )
        return stock
    log.info("serving on agenthost's lean protocols (%s)", _versions())
    return lean


def _versions() -> str:
    return f"uvicorn {metadata.version('uvicorn')}, websockets {metadata.version('websockets')}"
