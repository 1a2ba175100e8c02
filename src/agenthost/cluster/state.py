"""The cluster's state on disk (`<dir>/cluster.json`), so each command can act on a fleet
started by an earlier one."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

__all__ = ["ClusterState", "Replica", "alive", "load", "save"]


class Replica(msgspec.Struct):
    """One `agenthost serve` process in HAProxy slot `slot` (server `r<slot>`)."""

    slot: int
    pid: int
    port: int
    generation: int


class ClusterState(msgspec.Struct):
    dir: str
    port: int
    store: str
    admin_token: str
    haproxy_pid: int
    slots: int
    serve_env: dict[str, str]
    drain_timeout: float
    redis_pid: int | None = None
    generation: int = 1
    replicas: list[Replica] = []
    workers: list[Replica] = []
    """`--role worker` processes (not behind HAProxy); with any, the replicas are `api`."""

    @property
    def socket(self) -> str:
        return str(Path(self.dir) / "haproxy.sock")

    def free_slot(self) -> int:
        used = {r.slot for r in self.replicas}
        for slot in range(1, self.slots + 1):
            if slot not in used:
                return slot
        raise RuntimeError(f"all {self.slots} HAProxy slots are in use")


def _path(directory: str | Path) -> Path:
    return Path(directory) / "cluster.json"


def load(directory: str | Path) -> ClusterState:
    path = _path(directory)
    if not path.exists():
        raise FileNotFoundError(f"no cluster in {directory}: run `agenthost cluster up` first")
    return msgspec.json.decode(path.read_bytes(), type=ClusterState)


def save(state: ClusterState) -> None:
    path = _path(state.dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(state)))
    tmp.replace(path)


def alive(pid: int) -> bool:
    """Whether `pid` runs (a child that exited is reaped, so it does not count as alive)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
