"""`agenthost serve --workers N`: N server processes on one port, kept running by a small
supervisor that serves nothing itself.

The supervisor binds the port once and every process accepts from that one listening socket
(inherited, not re-bound): a process that dies leaves its waiting connections in the shared
queue for the others, and a restarted one serves at once without a bind race. Each process is
a fresh interpreter (`python -m agenthost.runtime.worker_process`), started in its own
session so a terminal's Ctrl-C reaches only the supervisor, which passes it on once.

- A process that dies (a crash, a kill, a non-zero exit) is started again in the same slot:
  at once if it had run for a while, else after a back-off that doubles up to 10 s.
- SIGTERM or SIGINT to the supervisor is passed to every process, which drains (in-flight
  turns finish and commit) and exits; a second one is passed on too, and ends them at once.
- A process that exits on its own with status 0 has drained (POST /admin/drain reached it):
  the supervisor drains the others and exits, so a drain means the same with one process or N.
- If the supervisor itself dies, its processes see their lifeline pipe close and drain.
- Each process takes only its share of new connections: a file in the group's directory
  holds every process's open connections (`agenthost.runtime.connection_shares`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from types import FrameType

import msgspec

from agenthost.core.settings import Settings, worker_count
from agenthost.observability.logs import configure_logging
from agenthost.runtime.assembly import assemble
from agenthost.runtime.connection_shares import ConnectionShares
from agenthost.runtime.listen import bind, bind_problem
from agenthost.runtime.worker_slot import WorkerSlot

__all__ = ["WORKER_ENV", "Supervisor", "WorkerSpec", "supervise"]

log = logging.getLogger("agenthost.workers")

WORKER_ENV = "_AGENTHOST_WORKER"
"""The environment variable that hands a process its settings and slot (JSON)."""

_BACKLOG = 2048  # uvicorn's default
_STEADY_S = 10.0  # a process that ran this long before dying is restarted at once
_MAX_BACKOFF_S = 10.0


class WorkerSpec(msgspec.Struct, frozen=True):
    settings: Settings
    slot: WorkerSlot


def supervise(settings: Settings) -> None:
    """Run `worker_count(settings)` processes until SIGTERM/SIGINT. Settings that cannot work
    raise SettingsError before anything listens (every part is built once here to check)."""
    configure_logging(settings)
    assemble(settings)  # builds, opens nothing: a bad URL or agent fails here, once
    try:
        sock = bind(settings.host, settings.port)
    except OSError as exc:
        print(f"agenthost: {bind_problem(settings, exc)}", file=sys.stderr)
        raise SystemExit(1) from None
    Supervisor(settings, worker_count(settings), sock).run()


class _Process:
    __slots__ = ("failures", "popen", "started")

    def __init__(self, popen: subprocess.Popen[bytes], failures: int) -> None:
        self.popen = popen
        self.started = time.monotonic()
        self.failures = failures


class Supervisor:
    """Starts, restarts and stops the processes of one `--workers` group."""

    def __init__(self, settings: Settings, count: int, listen_socket: socket.socket) -> None:
        self.settings = settings
        self.count = count
        self.sock = listen_socket
        self.processes: dict[int, _Process] = {}
        self.restarts: dict[int, tuple[float, int]] = {}  # slot -> (when, failures so far)
        self.starts = [0] * count  # processes started in each slot
        self.stopping = False
        self.peers_dir = tempfile.mkdtemp(prefix="agenthost-workers-")
        self.shares_path = os.path.join(self.peers_dir, "connections")
        ConnectionShares.create(self.shares_path, count)
        # Never written: its read end, held by every process, closes only with this one.
        self.lifeline_r, self.lifeline_w = os.pipe()
        self.wake_r, self.wake_w = os.pipe()  # signal numbers, written by the interpreter
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def run(self) -> None:
        """Start the processes, keep them running until told to stop, then wait for each to
        exit (a drain takes up to --drain-timeout)."""
        self.sock.listen(_BACKLOG)
        signal.set_wakeup_fd(self.wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, _note)
        log.info(
            "agenthost serving on http://%s:%d with %d processes (agent %s, store %s, llm %s)",
            self.settings.host,
            self.settings.port,
            self.count,
            self.settings.app or "the built-in demo agent",
            self.settings.store,
            self.settings.llm,
        )
        try:
            for index in range(self.count):
                self._spawn(index, 0)
            while self.processes or (self.restarts and not self.stopping):
                self._wait()
                self._reap()
                self._restart_due()
        finally:
            signal.set_wakeup_fd(-1)
            for process in self.processes.values():
                with contextlib.suppress(ProcessLookupError):
                    process.popen.kill()
            for fd in (self.lifeline_w, self.lifeline_r, self.wake_r, self.wake_w):
                os.close(fd)
            self.sock.close()
            shutil.rmtree(self.peers_dir, ignore_errors=True)
        log.info("agenthost: every process has exited")

    def _spawn(self, index: int, failures: int) -> None:
        slot = WorkerSlot(
            index=index,
            count=self.count,
            peers_dir=self.peers_dir,
            listen_fd=self.sock.fileno(),
            lifeline_fd=self.lifeline_r,
            restarts=self.starts[index],
        )
        self.starts[index] += 1
        env = dict(os.environ)
        env[WORKER_ENV] = msgspec.json.encode(WorkerSpec(self.settings, slot)).decode()
        popen = subprocess.Popen(
            [sys.executable, "-m", "agenthost.runtime.worker_process"],
            env=env,
            pass_fds=(self.sock.fileno(), self.lifeline_r),
            start_new_session=True,  # Ctrl-C goes to the supervisor only, which passes it on
        )
        self.processes[index] = _Process(popen, failures)

    def _wait(self) -> None:
        timeout = None
        if self.restarts and not self.stopping:
            timeout = max(0.0, min(when for when, _ in self.restarts.values()) - time.monotonic())
        with contextlib.suppress(InterruptedError):
            select.select([self.wake_r], [], [], timeout)
        try:
            signals = os.read(self.wake_r, 512)
        except BlockingIOError:
            signals = b""
        for number in signals:
            if number in (signal.SIGTERM, signal.SIGINT):
                self._stop(signal.Signals(number).name)

    def _stop(self, reason: str) -> None:
        """Drain every process; asked again, end them at once (each takes a second signal
        as that)."""
        if not self.stopping:
            log.info("draining %d processes (%s)", len(self.processes), reason)
        self.stopping = True
        self.restarts.clear()
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.popen.send_signal(signal.SIGTERM)

    def _reap(self) -> None:
        for index, process in list(self.processes.items()):
            code = process.popen.poll()
            if code is None:
                continue
            del self.processes[index]
            ConnectionShares.vacate(self.shares_path, index)  # the others stop leaving it any
            if self.stopping:
                continue
            if code == 0:
                log.warning("process %d drained and exited: draining the others", index)
                self._stop(f"process {index} drained")
                continue
            lived = time.monotonic() - process.started
            failures = 0 if lived >= _STEADY_S else process.failures + 1
            delay = 0.0 if failures == 0 else min(_MAX_BACKOFF_S, 0.5 * 2 ** (failures - 1))
            how = f"signal {-code}" if code < 0 else f"status {code}"
            log.warning(
                "process %d (pid %d) died with %s after %.1f s: restarting in %.1f s",
                index,
                process.popen.pid,
                how,
                lived,
                delay,
            )
            self.restarts[index] = (time.monotonic() + delay, failures)

    def _restart_due(self) -> None:
        if self.stopping:
            return
        now = time.monotonic()
        for index, (when, failures) in list(self.restarts.items()):
            if when <= now:
                del self.restarts[index]
                self._spawn(index, failures)


def _note(sig: int, frame: FrameType | None) -> None:
    """A signal's number reaches the loop through the wake-up pipe; nothing to do here."""
