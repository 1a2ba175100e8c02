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
import importlib
import logging
from dataclasses import dataclass
from importlib import metadata
from typing import Literal

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


STOCK = ServerProtocols("stock", "httptools", "websockets-sansio", batch_accept=False)


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
        "lean", lean.LeanHttpToolsProtocol, lean.LeanWebSocketProtocol, batch_accept=True
    )
    return protocols, ""


def choose_protocols(choice: str = "auto") -> ServerProtocols:
    """The protocols to serve with for `--server-protocols` (see `PROTOCOL_CHOICES`)."""
    if choice not in PROTOCOL_CHOICES:
        raise ValueError(
            f"unknown server protocols {choice!r}: expected {' or '.join(PROTOCOL_CHOICES)}"
        )
    if choice == "stock":
        log.info("serving on uvicorn's stock protocols (--server-protocols stock)")
        return STOCK
    lean, why_not = _lean()
    if lean is None:
        log.warning(
            "agenthost's lean protocols cannot run on %s (%s): serving on uvicorn's stock "
            "protocols (correct, but more CPU per chunk and memory per WebSocket)",
            _versions(),
            why_not,
        )
        return STOCK
    log.info("serving on agenthost's lean protocols (%s)", _versions())
    return lean


def _versions() -> str:
    return f"uvicorn {metadata.version('uvicorn')}, websockets {metadata.version('websockets')}"
