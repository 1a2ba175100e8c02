"""An asyncpg pool for a PostgreSQL-backed part beside the session store (the API key store,
the fleet registry, the work queue): the schema made ready on one connection before the
pool opens, and every failure a StoreUnavailable that names the part."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from agenthost.core.errors import StoreUnavailable
from agenthost.stores.postgres import FAILURES, split_options

__all__ = ["PgPool"]


class PgPool:
    def __init__(self, url: str, part: str, max_size: int) -> None:
        self.dsn, options = split_options(url)
        self.part = part  # "postgresql key store", ...: what an error names
        self.max_size = max_size
        self.connect_timeout = options["connect_timeout"]
        self.command_timeout = options["command_timeout"]
        self._pool: asyncpg.Pool | None = None

    async def open(self, prepare: Callable[[asyncpg.Connection], Awaitable[Any]]) -> None:
        """Run `prepare` (a migration, a schema) on a connection of its own, then open the
        pool."""
        try:
            conn = await asyncpg.connect(self.dsn, timeout=self.connect_timeout)
            try:
                await prepare(conn)
            finally:
                await conn.close()
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=0,
                max_size=self.max_size,
                timeout=self.connect_timeout,
                command_timeout=self.command_timeout,
            )
        except FAILURES as exc:
            raise StoreUnavailable(f"{self.part}: {exc}") from None

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreUnavailable(f"the {self.part} is not open")
        return self._pool

    async def call(self, method: str, query: str, *args: Any) -> Any:
        """`pool.<method>(query, *args)` (execute, fetch, fetchrow, fetchval)."""
        pool = self.pool
        try:
            return await getattr(pool, method)(query, *args)
        except FAILURES as exc:
            raise StoreUnavailable(f"{self.part}: {exc}") from None
