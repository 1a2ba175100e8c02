"""The pod's preStop hook: wait while the pod's endpoint removal reaches the Ingress, start
the drain with POST /admin/drain, then wait until the server has exited.

It must not return before the server is gone: the kubelet sends SIGTERM when the hook
returns, and a SIGTERM to a process that is already draining means "exit now".
Without an admin token it only waits, and the kubelet's SIGTERM starts the drain instead.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable

from agenthost.core.settings import Settings

__all__ = ["DEFAULT_DELAY", "prestop"]

DEFAULT_DELAY = 5.0
# The hook gives up this long after the drain timeout (the kubelet's grace period ends
# the pod anyway).
EXIT_SLACK_SECONDS = 15.0


def _loopback(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def _request(host: str, port: int, method: str, path: str, token: str | None) -> int:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request(method, path, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def _answers(host: str, port: int) -> bool:
    try:
        _request(host, port, "GET", "/healthz", None)
    except OSError:
        return False
    return True


def prestop(
    settings: Settings,
    delay: float = DEFAULT_DELAY,
    log: Callable[[str], None] = print,
) -> int:
    """Run the hook for the server `settings` describe; the exit status."""
    time.sleep(delay)
    host = _loopback(settings.host)
    if not settings.admin_token:
        log("agenthost prestop: no AGENTHOST_ADMIN_TOKEN; SIGTERM will start the drain")
        return 0
    try:
        status = _request(host, settings.port, "POST", "/admin/drain", settings.admin_token)
    except OSError as exc:
        log(f"agenthost prestop: the server on port {settings.port} does not answer: {exc}")
        return 1
    if status != 202:
        log(f"agenthost prestop: POST /admin/drain answered {status}, not 202")
        return 1
    deadline = time.monotonic() + settings.drain_timeout + EXIT_SLACK_SECONDS
    while _answers(host, settings.port):
        if time.monotonic() > deadline:
            log("agenthost prestop: the server still runs after its drain timeout")
            return 1
        time.sleep(0.2)
    log("agenthost prestop: drained; the server has stopped listening")
    return 0
