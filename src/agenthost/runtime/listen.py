"""The listening socket of a server, or of a `--workers` group's supervisor: bound before
anything is announced, and a bind that fails said in one line. Apart from the server itself, so
a supervisor (which serves nothing) binds without importing uvicorn."""

from __future__ import annotations

import errno
import socket

from agenthost.core.settings import Settings

__all__ = ["bind", "bind_problem"]


def bind(host: str, port: int) -> socket.socket:
    """The listening address, taken before anything is announced, so a port in use fails
    in one line rather than after a "serving on" line (OSError as the OS says it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def bind_problem(settings: Settings, exc: OSError) -> str:
    where = f"{settings.host}:{settings.port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {settings.port} is taken on {settings.host} (another server is listening "
            f"there); choose another with --port or AGENTHOST_PORT"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: no such local address; change --host or AGENTHOST_HOST"
    return f"cannot listen on {where}: {exc.strerror or exc}"
