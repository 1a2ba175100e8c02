"""A server process's place among the processes of `agenthost serve --workers N`: its index,
the metrics of its siblings, and the line to its supervisor.

Every process of the group answers `/metrics` for all of them: each one serves its own
exposition on a Unix socket `<peers_dir>/<index>.sock`, and whichever process a scrape lands
on reads its siblings' there and merges them under a `process` label. A sibling that is not
answering (it is being restarted) is left out of that scrape. The supervisor holds the write
end of a pipe whose read end every process watches: if the supervisor dies, the pipe closes
and each process drains and exits rather than serving on unsupervised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

import msgspec

from agenthost.observability.metrics import Metrics
from agenthost.observability.process_exports import merge_process_exports

__all__ = ["WorkerPeers", "WorkerSlot"]

log = logging.getLogger("agenthost.workers")

_SIBLING_TIMEOUT_S = 2.0


class WorkerSlot(msgspec.Struct, frozen=True):
    """What the supervisor tells a process it starts (sent as JSON in its environment)."""

    index: int
    count: int
    peers_dir: str
    listen_fd: int
    lifeline_fd: int
    restarts: int = 0
    """How many times the supervisor started this slot again after a process in it died."""

    def connections_path(self) -> str:
        """The group's table of open connections (`agenthost.runtime.connection_shares`)."""
        return os.path.join(self.peers_dir, "connections")

    def socket_path(self, index: int) -> str:
        """Where the process in slot `index` serves its metrics to its siblings."""
        return os.path.join(self.peers_dir, f"{index}.sock")


class WorkerPeers:
    """This process's side of the group: serves its own metrics to its siblings, reads
    theirs, and drains when the supervisor goes away."""

    def __init__(self, slot: WorkerSlot, metrics: Metrics, on_supervisor_gone: Callable[[], None]):
        self.slot = slot
        self.metrics = metrics
        self.on_supervisor_gone = on_supervisor_gone
        self._server: asyncio.AbstractServer | None = None

    async def open(self) -> None:
        path = self.slot.socket_path(self.slot.index)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by this slot's previous process
        self._server = await asyncio.start_unix_server(self._serve_sibling, path=path)
        asyncio.get_running_loop().add_reader(self.slot.lifeline_fd, self._lifeline_readable)

    async def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self.slot.lifeline_fd)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _lifeline_readable(self) -> None:
        # The supervisor never writes: readable means its end closed (it exited or died).
        asyncio.get_running_loop().remove_reader(self.slot.lifeline_fd)
        log.warning("the supervisor is gone: draining")
        self.on_supervisor_gone()

    async def _serve_sibling(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            writer.write(self._own_export())
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    def _own_export(self) -> bytes:
        """This process's metrics, and how often its slot was restarted (a crash loop shows
        as a rising count)."""
        return self.metrics.render() + (
            b"# HELP agenthost_process_restarts Times this process's slot was started again "
            b"after a process in it died.\n"
            b"# TYPE agenthost_process_restarts gauge\n"
            b"agenthost_process_restarts %d\n" % self.slot.restarts
        )

    async def export(self) -> bytes:
        """The metrics of every process that answers, this one's included."""
        slot = self.slot
        siblings = [i for i in range(slot.count) if i != slot.index]
        texts = await asyncio.gather(*(_read_sibling(slot.socket_path(i)) for i in siblings))
        exports = dict(zip(siblings, texts, strict=True))
        exports[slot.index] = self._own_export()
        return merge_process_exports((str(i), exports[i]) for i in sorted(exports) if exports[i])


async def _read_sibling(path: str) -> bytes:
    """A sibling's exposition, or b"" when it does not answer in time (restarting)."""
    try:
        async with asyncio.timeout(_SIBLING_TIMEOUT_S):
            reader, writer = await asyncio.open_unix_connection(path)
            try:
                return await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return b""
