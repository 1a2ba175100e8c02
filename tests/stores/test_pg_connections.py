"""The PostgreSQL store's connections: bounded, reused, and replaced after a failure."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import pytest

from agenthost.stores.pg_connections import PgConnections


async def backends(url: str) -> set[int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        return {row[0] for row in rows}
    finally:
        await conn.close()


async def test_calls_past_the_size_wait_for_a_connection_and_reuse_it(postgres_url: str) -> None:
    conns = PgConnections(postgres_url, size=2, connect_timeout=5, command_timeout=10)
    try:
        running = 0
        most = 0

        async def slow(i: int) -> int:
            nonlocal running, most

            async def call(conn: asyncpg.Connection) -> int:
                nonlocal running, most
                running += 1
                most = max(most, running)
                try:
                    value: int = await conn.fetchval("SELECT $1::int FROM pg_sleep(0.05)", i)
                    return value
                finally:
                    running -= 1

            return await conns.run(call)

        assert await asyncio.gather(*(slow(i) for i in range(8))) == list(range(8))
        assert most == 2
        pids = await backends(postgres_url)
        assert len(pids) == 2
        await asyncio.gather(*(conns.fetchval("SELECT 1") for _ in range(6)))
        assert await backends(postgres_url) == pids  # the same two, kept open
    finally:
        await conns.close()


async def test_a_connection_lost_mid_use_is_replaced_by_the_next_call(postgres_url: str) -> None:
    conns = PgConnections(postgres_url, size=1, connect_timeout=5, command_timeout=10)
    try:
        first = await conns.fetchval("SELECT pg_backend_pid()")
        admin = await asyncpg.connect(postgres_url)
        try:
            await admin.fetchval("SELECT pg_terminate_backend($1)", first)
        finally:
            await admin.close()
        deadline = asyncio.get_running_loop().time() + 30
        while first in await backends(postgres_url):  # gone from the server's side
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        # The next call fails (the connection is found dead in use) or, if the client saw
        # the connection close while idle, already runs on a new one.
        with contextlib.suppress(
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.exceptions.InternalClientError,
            OSError,
        ):
            await conns.fetchval("SELECT 1")
        second = await conns.fetchval("SELECT pg_backend_pid()")
        assert second != first
        # A statement error leaves the connection in service.
        with pytest.raises(asyncpg.PostgresError):
            await conns.fetchval("SELECT 1/0")
        assert await conns.fetchval("SELECT pg_backend_pid()") == second
    finally:
        await conns.close()


async def test_a_waiter_cancelled_does_not_leak_the_connection(postgres_url: str) -> None:
    conns = PgConnections(postgres_url, size=1, connect_timeout=5, command_timeout=10)
    try:
        hold = asyncio.create_task(conns.fetchval("SELECT pg_sleep(0.3)"))
        await asyncio.sleep(0)  # it starts, and takes the only connection
        waiter = asyncio.create_task(conns.fetchval("SELECT 1"))
        await asyncio.sleep(0)  # it starts, and waits
        assert len(conns._waiters) == 1 and not hold.done()
        waiter.cancel()
        await hold
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert await asyncio.wait_for(conns.fetchval("SELECT 2"), 10) == 2
    finally:
        await conns.close()
