"""Fleet operations on real processes: up, scale, rollout, status, down.

A replica is replaced with maxSurge 1 / maxUnavailable 0: the new one starts and turns
ready before the old one is drained (HAProxy stops sending it new connections, then
`POST /admin/drain` lets its in-flight turns commit and it exits).

With workers (`up --workers N`), the replicas behind HAProxy run `--role api` and the
workers `--role worker`; workers are scaled on their own (`scale_workers`), and a worker
drained takes no more turns, finishes its running ones and hands back the rest.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from agenthost.cluster.haproxy import HAProxyAPI, render_config
from agenthost.cluster.state import ClusterState, Replica, alive, load, save

__all__ = ["ReplicaStatus", "down", "rollout", "scale", "scale_workers", "status", "up"]

AGENTHOST = str(Path(sys.executable).with_name("agenthost"))
Log = Callable[[str], None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def _http(url: str, method: str = "GET", token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=3) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def _spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    return proc.pid


def up(
    directory: str,
    *,
    replicas: int,
    port: int,
    store: str | None,
    serve_env: dict[str, str],
    drain_timeout: float = 30.0,
    slots: int = 16,
    workers: int = 0,
    log: Log = print,
) -> ClusterState:
    """Start redis-server (unless `store` names one), HAProxy, the replicas and `workers`
    worker processes (with any, the replicas queue turns for them: `--role api`)."""
    if workers:
        serve_env = {**serve_env, "AGENTHOST_ROLE": "api"}
    path = Path(directory).resolve()
    if (path / "cluster.json").exists():
        state = load(path)
        if alive(state.haproxy_pid):
            raise RuntimeError(f"a cluster already runs from {path}: `agenthost cluster down`")
    path.mkdir(parents=True, exist_ok=True)
    redis_pid = None
    if store is None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed; install it or pass --store")
        redis_port = _free_port()
        redis_pid = _spawn(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
             "--appendonly", "no", "--dir", str(path)],
            path / "redis.log",
        )  # fmt: skip
        store = f"redis://127.0.0.1:{redis_port}/0"
        log(f"started redis-server on 127.0.0.1:{redis_port} (pid {redis_pid})")
    if shutil.which("haproxy") is None:
        raise RuntimeError("haproxy is not installed (Debian package haproxy)")
    socket_path = str(path / "haproxy.sock")
    config = path / "haproxy.cfg"
    config.write_text(render_config(port=port, socket_path=socket_path, slots=slots))
    check = subprocess.run(["haproxy", "-c", "-q", "-f", str(config)], capture_output=True)
    if check.returncode != 0:
        raise RuntimeError(f"haproxy rejected its config: {check.stderr.decode()}")
    haproxy_pid = _spawn(["haproxy", "-db", "-f", str(config)], path / "haproxy.log")
    _wait(lambda: Path(socket_path).exists(), 10, "haproxy's admin socket")
    log(f"started haproxy on 127.0.0.1:{port} (pid {haproxy_pid})")
    state = ClusterState(
        dir=str(path),
        port=port,
        store=store,
        admin_token=secrets.token_urlsafe(24),
        haproxy_pid=haproxy_pid,
        slots=slots,
        serve_env=serve_env,
        drain_timeout=drain_timeout,
        redis_pid=redis_pid,
    )
    save(state)
    for _ in range(workers):
        _start_worker(state, log)
    for _ in range(replicas):
        _start_replica(state, log)
    return state


def _process_env(state: ClusterState, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHOST_")}
    # A loopback fleet for development and tests: no authentication unless asked for, and
    # the playground on (a shared store turns it off by default).
    env["AGENTHOST_ALLOW_NO_AUTH"] = "true"
    env["AGENTHOST_PLAYGROUND"] = "on"
    env.update(state.serve_env)
    env.update(
        {
            "AGENTHOST_HOST": "127.0.0.1",
            "AGENTHOST_PORT": str(port),
            "AGENTHOST_STORE": state.store,
            "AGENTHOST_ADMIN_TOKEN": state.admin_token,
            "AGENTHOST_DRAIN_TIMEOUT": str(state.drain_timeout),
        }
    )
    return env


def _start_worker(state: ClusterState, log: Log) -> Replica:
    used = {w.slot for w in state.workers}
    slot = next(n for n in range(1, len(used) + 2) if n not in used)
    port = _free_port()  # its /readyz and /metrics; clients never reach it
    env = {**_process_env(state, port), "AGENTHOST_ROLE": "worker"}
    pid = _spawn([AGENTHOST, "serve"], Path(state.dir) / f"worker-{slot}-{port}.log", env)

    def ready() -> bool:
        if not alive(pid):
            raise RuntimeError(f"worker on port {port} exited; see its log in {state.dir}")
        return _http(f"http://127.0.0.1:{port}/readyz")[0] == 200

    _wait(ready, 30, f"worker on port {port} to be ready")
    worker = Replica(slot, pid, port, state.generation)
    state.workers.append(worker)
    save(state)
    log(f"worker w{slot} ready on port {port} (pid {pid})")
    return worker


def _drain_worker(state: ClusterState, worker: Replica, log: Log) -> None:
    code, _ = _http(
        f"http://127.0.0.1:{worker.port}/admin/drain", method="POST", token=state.admin_token
    )
    if code != 202 and alive(worker.pid):
        os.kill(worker.pid, signal.SIGTERM)
    _wait(lambda: not alive(worker.pid), state.drain_timeout + 15, f"w{worker.slot} to exit")
    state.workers = [w for w in state.workers if w.slot != worker.slot]
    save(state)
    log(f"worker w{worker.slot} drained and stopped")


def scale_workers(directory: str, workers: int, log: Log = print) -> ClusterState:
    """Add workers, or drain the newest ones, until there are `workers` (at least one: the
    replicas of a fleet with workers only queue turns)."""
    state = load(directory)
    if not state.workers:
        raise ValueError("this cluster has no workers: start it with `up --workers N`")
    if workers < 1:
        raise ValueError("a cluster with workers keeps at least one")
    while len(state.workers) < workers:
        _start_worker(state, log)
    while len(state.workers) > workers:
        _drain_worker(state, max(state.workers, key=lambda w: (w.generation, w.slot)), log)
    return state


def _start_replica(state: ClusterState, log: Log) -> Replica:
    slot = state.free_slot()
    port = _free_port()
    env = _process_env(state, port)
    pid = _spawn([AGENTHOST, "serve"], Path(state.dir) / f"replica-{slot}-{port}.log", env)
    replica = Replica(slot, pid, port, state.generation)

    def ready() -> bool:
        if not alive(pid):
            raise RuntimeError(f"replica on port {port} exited; see its log in {state.dir}")
        return _http(f"http://127.0.0.1:{port}/readyz")[0] == 200

    _wait(ready, 30, f"replica on port {port} to be ready")
    api = HAProxyAPI(state.socket)
    api.enable(slot, port)
    _wait(lambda: api.statuses().get(slot, ("",))[0] == "UP", 10, f"haproxy to see r{slot} up")
    state.replicas.append(replica)
    save(state)
    log(f"replica r{slot} ready on port {port} (pid {pid})")
    return replica


def _drain_replica(state: ClusterState, replica: Replica, log: Log) -> None:
    api = HAProxyAPI(state.socket)
    api.drain(replica.slot)
    code, _ = _http(
        f"http://127.0.0.1:{replica.port}/admin/drain", method="POST", token=state.admin_token
    )
    if code != 202 and alive(replica.pid):
        os.kill(replica.pid, signal.SIGTERM)  # the same drain, by signal
    _wait(lambda: not alive(replica.pid), state.drain_timeout + 15, f"r{replica.slot} to exit")
    api.disable(replica.slot)
    state.replicas = [r for r in state.replicas if r.slot != replica.slot]
    save(state)
    log(f"replica r{replica.slot} drained and stopped")


def scale(directory: str, replicas: int, log: Log = print) -> ClusterState:
    """Add replicas, or drain the newest ones, until there are `replicas`."""
    if replicas < 1:
        raise ValueError("a cluster keeps at least one replica")
    state = load(directory)
    while len(state.replicas) < replicas:
        _start_replica(state, log)
    while len(state.replicas) > replicas:
        _drain_replica(state, max(state.replicas, key=lambda r: (r.generation, r.slot)), log)
    return state


def rollout(directory: str, log: Log = print) -> ClusterState:
    """Replace every replica, then every worker, one at a time: start the new one, wait
    ready, drain the old (a worker hands back what it could not finish)."""
    state = load(directory)
    old = list(state.replicas)
    old_workers = list(state.workers)
    state.generation += 1
    save(state)
    for replica in old:
        _start_replica(state, log)
        _drain_replica(state, replica, log)
    for worker in old_workers:
        _start_worker(state, log)
        _drain_worker(state, worker, log)
    return state


class ReplicaStatus:
    """A row of `agenthost cluster status`."""

    def __init__(self, replica: Replica, lb_status: str, lb_sessions: int) -> None:
        self.replica = replica
        self.alive = alive(replica.pid)
        code, _ = _http(f"http://127.0.0.1:{replica.port}/readyz")
        self.ready = code == 200
        metrics = _http(f"http://127.0.0.1:{replica.port}/metrics")[1].decode(errors="replace")
        values = dict(
            line.rsplit(" ", 1) for line in metrics.splitlines() if line and line[0] != "#"
        )
        self.connections = int(float(values.get("agenthost_active_connections", "0")))
        self.inflight = int(float(values.get("agenthost_inflight_turns", "0")))
        self.lb_status = lb_status
        self.lb_sessions = lb_sessions


def status(directory: str) -> tuple[ClusterState, list[ReplicaStatus]]:
    state = load(directory)
    lb = HAProxyAPI(state.socket).statuses() if alive(state.haproxy_pid) else {}
    rows = [ReplicaStatus(r, *lb.get(r.slot, ("gone", 0))) for r in state.replicas]
    rows += [ReplicaStatus(w, "worker", 0) for w in state.workers]  # not behind HAProxy
    return state, rows


def down(directory: str, log: Log = print) -> None:
    """Drain every replica, then stop HAProxy and the redis-server it started."""
    state = load(directory)
    for replica in list(state.replicas):
        if alive(replica.pid):
            _drain_replica(state, replica, log)
    for worker in list(state.workers):
        if alive(worker.pid):
            _drain_worker(state, worker, log)
    for pid, name in ((state.haproxy_pid, "haproxy"), (state.redis_pid, "redis-server")):
        if pid is not None and alive(pid):
            os.kill(pid, signal.SIGTERM)
            _wait(lambda pid=pid: not alive(pid), 10, f"{name} to stop")  # type: ignore[misc]
            log(f"stopped {name}")
    Path(state.dir, "cluster.json").unlink(missing_ok=True)
