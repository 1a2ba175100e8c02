"""HAProxy in front of the fleet: its configuration and its runtime API.

Least-connections balancing; health checks on `/readyz` (a draining replica drops out at
once); `retry-on` for refused connections and 503s, which is safe because every turn has an
Idempotency-Key; cookie affinity only for WebSocket upgrades (their own backend). Replicas
fill pre-declared slots `r1..rN` that the runtime API points at a port and enables.
"""

from __future__ import annotations

import socket

__all__ = ["BACKENDS", "HAProxyAPI", "render_config"]

BACKENDS = ("agents", "agents_ws")


def render_config(*, port: int, socket_path: str, slots: int) -> str:
    backends = []
    for name in BACKENDS:
        # WebSocket upgrades: affinity by cookie, and never on a reused server connection,
        # which may belong to a replica that is shutting down.
        cookie = (
            "    cookie AHWS insert indirect nocache\n    http-reuse never\n"
            if name == "agents_ws"
            else ""
        )
        backends.append(
            f"backend {name}\n"
            "    balance leastconn\n"
            "    option httpchk GET /readyz\n"
            "    http-check expect status 200\n"
            f"{cookie}"
            "    default-server check inter 500ms fall 1 rise 1\n"
            f"    server-template r 1-{slots} 127.0.0.1:1 disabled\n"
        )
    return (
        "global\n"
        f"    stats socket {socket_path} mode 600 level admin\n"
        "    maxconn 9000\n"
        "    log stdout format raw local0 err\n"
        "\n"
        "defaults\n"
        "    mode http\n"
        "    log global\n"
        "    timeout connect 2s\n"
        "    timeout client 300s\n"
        "    timeout server 300s\n"
        "    timeout tunnel 3600s\n"
        "    option http-buffer-request\n"
        "    option redispatch 1\n"
        "    retries 5\n"
        "    retry-on conn-failure empty-response 503\n"
        "\n"
        "frontend fe\n"
        f"    bind 127.0.0.1:{port}\n"
        "    maxconn 9000\n"
        "    acl is_websocket hdr(Upgrade) -i websocket\n"
        "    use_backend agents_ws if is_websocket\n"
        "    default_backend agents\n"
        "\n" + "\n".join(backends)
    )


class HAProxyAPI:
    """Commands over the admin socket (one connection per command)."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(self.socket_path)
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def _each(self, slot: int, template: str) -> None:
        for backend in BACKENDS:
            out = self.command(template.format(server=f"{backend}/r{slot}")).strip()
            if out and not out.startswith(("IP changed", "no need to change", "port changed")):
                raise RuntimeError(f"haproxy: {out}")

    def enable(self, slot: int, port: int) -> None:
        self._each(slot, "set server {server} addr 127.0.0.1 port " + str(port))
        self._each(slot, "set server {server} state ready")
        self._each(slot, "enable health {server}")

    def drain(self, slot: int) -> None:
        """No new connections to the slot; existing ones go on."""
        self._each(slot, "set server {server} state drain")

    def disable(self, slot: int) -> None:
        self._each(slot, "set server {server} state maint")

    def statuses(self) -> dict[int, tuple[str, int]]:
        """slot -> (status, current sessions) in the main backend."""
        out: dict[int, tuple[str, int]] = {}
        lines = self.command("show stat").splitlines()
        if not lines:
            return out
        header = lines[0].lstrip("# ").split(",")
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            name = row.get("svname", "")
            if row.get("pxname") == "agents" and name.startswith("r") and name[1:].isdigit():
                out[int(name[1:])] = (row.get("status", "?"), int(row.get("scur") or 0))
        return out
