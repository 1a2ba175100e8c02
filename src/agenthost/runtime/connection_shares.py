"""How many connections each process of a `--workers N` group holds, so that every process
takes its share of new ones from the listening socket they all accept from.

Every process of a group watches the same listening socket; the kernel wakes all of them for
a new connection and whichever runs first accepts whatever is waiting. That spread 5,000
keep-alive connections opened at once 2,242 / 2,758 and 2,268 / 2,732 over two processes
(`ss -tnp`), and since a kept-alive connection brings all its turns to the process that
accepted it, the busier process then ran a tenth more of the turns for as long as the
connections lasted (issue 21). SO_REUSEPORT's hash would spread them evenly, but gives each
process a queue of its own, which waits while that process is being restarted; with one
shared queue the others serve it.

So each process publishes its open connections in a small file every process of the group
maps (one signed 64-bit count per slot; -1: no process serving in that slot), and accepts
only while it holds at most `SLACK` more than the fewest of its siblings. Every process is
woken for every new connection, and publishes whenever it is, so the counts are as fresh as
the last connection that arrived (a count made stale by connections closing since is too
high, which errs toward the others accepting). A process over its share leaves what waits
to its siblings while one of them has published since it last stood back; if none has, it
stops watching the socket for `PAUSE_S` rather than spin. Once none has for `STUCK_S` (its
loop is stuck, or it died before its supervisor noticed), it takes `FLOOR` of what waits
after each pause, twice as many each time: a sibling that does not accept delays new
connections by `STUCK_S` and a few pauses, never stops them. (Taking them after a single
quiet pause let a descheduled sibling lose hundreds of its share on a loaded machine.)
Measured on a loaded 2-core machine (`--workers 2`), 5,000 connections opened at once
(`ss -tnp`): 2,500 / 2,500, 2,498 / 2,502, 2,499 / 2,501, 2,499 / 2,501; without the table
2,018 / 2,982, 1,688 / 3,312, 2,269 / 2,731, 2,005 / 2,995. Turns of
`benchmarks/concurrent_sessions.py --sessions 10000 --turns 3 --workers 2`: 15,249 / 14,751
(twice) and 15,099 / 14,901; without, 15,411 / 14,589, 16,407 / 13,593, 14,364 / 15,636 and
18,024 / 11,976 (loops lagging past `STUCK_S` there let the other process take a few).
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Callable

__all__ = ["FLOOR", "NO_PROCESS", "PAUSE_S", "SLACK", "STUCK_S", "ConnectionShares"]

SLACK = 8
"""Connections a process may hold above the fewest of its siblings and still accept."""
PAUSE_S = 0.005
"""How long a process over its share, whose siblings did not wake, stops watching."""
STUCK_S = 0.05
"""How long no sibling may publish before a process over its share accepts anyway."""
FLOOR = 16
"""Connections such a process then accepts after its first pause, twice as many after each
further one."""
NO_PROCESS = -1

_COUNT = struct.Struct("=q")


class ConnectionShares:
    """One process's view of its group's table of open connections (`path`, `count` slots).
    `open_connections` is this process's own count, read when it publishes."""

    def __init__(
        self, path: str, index: int, count: int, open_connections: Callable[[], int]
    ) -> None:
        self.index = index
        self.count = count
        self.open_connections = open_connections
        fd = os.open(path, os.O_RDWR)
        try:
            self._table = mmap.mmap(fd, count * _COUNT.size)
        finally:
            os.close(fd)

    @staticmethod
    def create(path: str, count: int) -> None:
        """The group's table, every slot empty (the supervisor makes it before any process)."""
        with open(path, "wb") as table:
            table.write(_COUNT.pack(NO_PROCESS) * count)

    @staticmethod
    def vacate(path: str, index: int) -> None:
        """Mark `index` as serving nothing (its process exited): its siblings stop leaving
        connections to it."""
        with open(path, "r+b") as table:
            table.seek(index * _COUNT.size)
            table.write(_COUNT.pack(NO_PROCESS))

    def held(self, index: int) -> int:
        return int(_COUNT.unpack_from(self._table, index * _COUNT.size)[0])

    def publish(self, pending: int = 0) -> int:
        """Write this process's count (its open connections and `pending` accepted ones not
        yet set up) and return it."""
        mine = self.open_connections() + pending
        _COUNT.pack_into(self._table, self.index * _COUNT.size, mine)
        return mine

    def allowance(self, mine: int) -> int | None:
        """How many more connections this process, holding `mine`, may accept now; None
        when no sibling is serving (no limit)."""
        fewest = min(
            (n for i in range(self.count) if i != self.index and (n := self.held(i)) >= 0),
            default=None,
        )
        if fewest is None:
            return None
        return max(0, fewest + SLACK - mine)

    def siblings(self) -> bytes:
        """What the siblings last published (compare two to see whether any did)."""
        size = _COUNT.size
        return bytes(self._table[: self.index * size]) + bytes(
            self._table[(self.index + 1) * size :]
        )

    def leave(self) -> None:
        """This process accepts no more (it drains or exits)."""
        _COUNT.pack_into(self._table, self.index * _COUNT.size, NO_PROCESS)

    def close(self) -> None:
        self._table.close()
