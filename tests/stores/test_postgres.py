"""What the PostgreSQL store promises beyond the shared contract: migrations under an advisory
lock, refusal of a newer schema, keeping sessions until deleted, retention in batches, a
constant cost per turn, and behaviour while the server is down."""

from __future__ import annotations

import asyncio
import math
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from agenthost.core.errors import StoreUnavailable
from agenthost.registry import create_registry
from agenthost.stores import Message, Started, create_store, pg_schema
from agenthost.stores.postgres import PostgresStore, split_options
from tests.fixtures.agenthost import AGENTHOST
from tests.fixtures.postgres import PostgresServer


def sid() -> str:
    return f"pg-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(postgres_store: PostgresStore) -> PostgresStore:
    return postgres_store


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str) -> float:
    """Poll `check` until true; the seconds it took. StoreUnavailable counts as not yet."""
    start = time.monotonic()
    while True:
        try:
            if await check():
                return time.monotonic() - start
        except StoreUnavailable:
            pass
        assert time.monotonic() - start < within, f"not {what} within {within} s"
        await asyncio.sleep(0.02)


async def turn(store: PostgresStore, session_id: str, turn_id: str, ttl_s: float) -> Started:
    st = await store.begin_turn(
        session_id, turn_id, "q", metadata_patch=None, lease_ms=10_000, window=5, ttl_s=ttl_s
    )
    assert isinstance(st, Started)
    n, now = st.message_count, time.time()
    await store.commit_turn(
        st.lease,
        user=Message("user", "q", turn_id, now, n),
        assistant=Message("assistant", "a", turn_id, now, n + 1),
        metadata=st.metadata,
        ttl_s=ttl_s,
    )
    return st


def test_url_options_are_taken_out_of_the_dsn() -> None:
    dsn, options = split_options(
        "postgresql://u:p@h:5/db?pool_size=7&sslmode=disable&command_timeout=1.5&migrate=0"
    )
    assert dsn == "postgresql://u:p@h:5/db?sslmode=disable"
    assert options["pool_size"] == 7 and options["command_timeout"] == 1.5
    assert options["migrate"] == 0
    with pytest.raises(ValueError, match="pool_size"):
        split_options("postgresql://h/db?pool_size=many")


# -- migrations ---------------------------------------------------------------------------


async def test_replicas_starting_at_once_apply_each_migration_once(postgres_url: str) -> None:
    dsn, _ = split_options(postgres_url)
    conns = [await asyncpg.connect(dsn) for _ in range(5)]
    try:
        applied = await asyncio.gather(*(pg_schema.migrate_schema(c) for c in conns))
        known = [m.version for m in pg_schema.known_migrations()]
        assert sorted(v for versions in applied for v in versions) == known
        now = await pg_schema.schema_status(conns[0])
        assert now.current == known[-1] and now.pending == [] and not now.too_new
        assert await pg_schema.migrate_schema(conns[0]) == []
    finally:
        for c in conns:
            await c.close()


async def test_a_schema_newer_than_this_build_is_refused(postgres_url: str) -> None:
    dsn, _ = split_options(postgres_url)
    conn = await asyncpg.connect(dsn)
    try:
        await pg_schema.migrate_schema(conn)
        await conn.execute("INSERT INTO agenthost_schema (version, name) VALUES (9999, 'future')")
    finally:
        await conn.close()
    store = create_store(postgres_url)
    with pytest.raises(pg_schema.SchemaTooNew, match="newer than this agenthost knows"):
        await store.open()
    status = await asyncio.to_thread(
        subprocess.run,
        [AGENTHOST, "db", "status", "--store", postgres_url],
        capture_output=True,
        text=True,
    )
    assert status.returncode == 1 and "upgrade agenthost" in status.stdout


async def test_a_server_told_not_to_migrate_refuses_a_database_behind(postgres_url: str) -> None:
    store = create_store(f"{postgres_url}?migrate=0")
    with pytest.raises(pg_schema.SchemaTooNew, match="agenthost db migrate"):
        await store.open()


def test_db_migrate_and_status_commands(postgres_url: str) -> None:
    before = subprocess.run(
        [AGENTHOST, "db", "status", "--store", postgres_url], capture_output=True, text=True
    )
    assert before.returncode == 1 and "pending: [1" in before.stdout
    migrate = subprocess.run(
        [AGENTHOST, "db", "migrate", "--store", postgres_url], capture_output=True, text=True
    )
    assert migrate.returncode == 0 and "up to date" in migrate.stdout, migrate.stderr
    after = subprocess.run(
        [AGENTHOST, "db", "status", "--store", postgres_url], capture_output=True, text=True
    )
    assert after.returncode == 0 and "up to date" in after.stdout
    wrong = subprocess.run(
        [AGENTHOST, "db", "status", "--store", "redis://127.0.0.1:1/0"],
        capture_output=True,
        text=True,
    )
    assert wrong.returncode == 2 and "not a postgresql://" in wrong.stderr


# -- keeping and removing -----------------------------------------------------------------


async def test_sessions_without_retention_are_kept_until_deleted(store: PostgresStore) -> None:
    s = sid()
    await turn(store, s, "t1", math.inf)
    assert await store.purge_expired() == 0
    info = await store.get_session(s)
    assert info is not None and info.turns == 1
    assert await store.delete_session(s) is True
    assert await store.get_session(s) is None


async def test_retention_purges_idle_sessions_in_bounded_batches(
    store: PostgresStore, postgres_server: PostgresServer
) -> None:
    kept = sid()
    await turn(store, kept, "t1", math.inf)
    idle = [sid() for _ in range(3)]
    for s in idle:
        await turn(store, s, "t1", 0.2)

    async def all_expired() -> bool:
        return all([await store.get_session(s) is None for s in idle])

    await eventually(all_expired, 5, "the idle sessions expired")
    database = store.dsn.rsplit("/", 1)[1]
    assert await store._fetchval("SELECT agenthost_purge(2)") == 2
    assert await store.purge_expired() == 1
    left = postgres_server.sql(
        "SELECT count(*) FROM agenthost_messages m JOIN agenthost_sessions s USING (session_id)",
        database,
    )
    orphans = postgres_server.sql(
        "SELECT count(*) FROM agenthost_messages WHERE session_id NOT IN"
        " (SELECT session_id FROM agenthost_sessions)",
        database,
    )
    assert left == "2" and orphans == "0"
    assert await store.get_session(kept) is not None


async def test_a_turn_reads_the_window_not_the_history(
    store: PostgresStore, postgres_server: PostgresServer
) -> None:
    """The begin step's work is bounded by the window: at 10,000 messages, the plan of its
    window query walks the primary key backwards and stops after `window` rows."""
    s = sid()
    await turn(store, s, "t0", math.inf)
    database = store.dsn.rsplit("/", 1)[1]
    postgres_server.sql(
        "INSERT INTO agenthost_messages SELECT session_id, seq, 'user', 'x', 't', 0"
        f" FROM (SELECT '{s}' AS session_id, generate_series(2, 9999) AS seq) g;"
        f" UPDATE agenthost_sessions SET message_count = 10000 WHERE session_id = '{s}';"
        " ANALYZE agenthost_messages",
        database,
    )
    plan = postgres_server.sql(
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) SELECT * FROM agenthost_messages"
        f" WHERE session_id = '{s}' AND seq < 10000 ORDER BY seq DESC LIMIT 5",
        database,
    )
    assert "Index Scan Backward" in plan and "rows=5 " in plan, plan
    st = await turn(store, s, "t1", math.inf)
    assert [m.seq for m in st.history] == [9995, 9996, 9997, 9998, 9999]


# -- outages ------------------------------------------------------------------------------


async def test_an_outage_answers_store_unavailable_and_service_resumes_by_itself(
    own_postgres: PostgresServer,
) -> None:
    url = own_postgres.create_database() + "?connect_timeout=0.5&command_timeout=1"
    store = create_store(url)
    await store.open()
    try:
        s = sid()
        assert isinstance(store, PostgresStore)
        await turn(store, s, "t1", math.inf)
        own_postgres.stop()
        with pytest.raises(StoreUnavailable):
            await store.get_session(s)
        with pytest.raises(StoreUnavailable):
            await turn(store, s, "t2", math.inf)
        own_postgres.start()

        async def served() -> bool:
            info = await store.get_session(s)
            return info is not None and info.turns == 1

        took = await eventually(served, 5, "served again after the restart")
        assert took < 2.0
        await turn(store, s, "t2", math.inf)
        info = await store.get_session(s)
        assert info is not None and info.turns == 2
    finally:
        await store.close()


async def test_a_store_opened_while_postgres_is_down_is_unavailable(
    own_postgres: PostgresServer,
) -> None:
    url = own_postgres.create_database() + "?connect_timeout=0.5"
    own_postgres.stop()
    with pytest.raises(StoreUnavailable):
        await create_store(url).open()


async def test_the_registry_tables_are_migration_10_and_an_earlier_builds_are_adopted(
    postgres_url: str,
) -> None:
    dsn, _ = split_options(postgres_url)
    conn = await asyncpg.connect(dsn)
    try:
        # As an earlier build left a database: migration 10 not recorded, the registry's
        # tables made by the registry itself, with a heartbeat in them.
        await pg_schema.migrate_schema(conn)
        await conn.execute("DELETE FROM agenthost_schema WHERE version = 10")
        await conn.execute("INSERT INTO agenthost_processes VALUES ('p1', 'Infinity', '\\x00')")
    finally:
        await conn.close()
    registry = create_registry(postgres_url)
    await registry.open()  # applies 10 and keeps what was there
    try:
        conn = await asyncpg.connect(dsn)
        try:
            now = await pg_schema.schema_status(conn)
            assert 10 in [m.version for m in pg_schema.known_migrations()]
            assert now.pending == [] and now.current >= 10
            assert await conn.fetchval("SELECT process_id FROM agenthost_processes") == "p1"
        finally:
            await conn.close()
    finally:
        await registry.close()
