"""Redis URLs, read in one place: agenthost's own options split from what redis-py gets, cluster
and TLS told apart, bad URLs refused with the URL named (password masked), the clients built
with the values each part asks for, and every Redis-backed part reading its URL the same way.
No server is needed: building a client opens no connection."""

from __future__ import annotations

import ssl
import subprocess
import sys

import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster

from agenthost.auth.keystores import RedisKeyStore, create_key_store
from agenthost.brokers import create_broker
from agenthost.brokers.redis import RedisBroker
from agenthost.connections.redis import RedisSettings, is_redis_url
from agenthost.core.settings import Settings, broker_url, limiter_url, shared_store
from agenthost.llm.cache import cached_llm
from agenthost.llm.cache_backends import RedisCacheBackend, create_cache_backend
from agenthost.llm.sim_client import SimLLM
from agenthost.ratelimit import create_limiter
from agenthost.ratelimit.redis import RedisLimiter
from agenthost.stores import create_store
from agenthost.stores.redis import RedisStore

OPTIONS = "max_connections=50&socket_timeout=0.5&connect_timeout=0.25"


def test_redis_urls_are_told_from_others_by_scheme() -> None:
    for url in ("redis://h", "rediss://h:6380/1", "redis+cluster://h:7000", "REDISS+Cluster://h"):
        assert is_redis_url(url), url
    for url in ("memory://", "sqlite:///x.db", "postgres://h/db", "redis", "redisx://h", ""):
        assert not is_redis_url(url), url


def test_our_options_are_split_from_the_url_redis_py_gets() -> None:
    theirs = "ssl_cert_reqs=none&health_check_interval=5"
    settings = RedisSettings.from_url(f"redis://app:p%2Fw@cache.internal:6380/3?{OPTIONS}&{theirs}")
    assert settings.client_url == f"redis://app:p%2Fw@cache.internal:6380/3?{theirs}"
    assert (settings.max_connections, settings.socket_timeout, settings.connect_timeout) == (
        50,
        0.5,
        0.25,
    )
    assert (settings.host, settings.port, settings.db) == ("cache.internal", 6380, 3)
    assert (settings.username, settings.password) == ("app", "p/w")
    assert not settings.cluster and not settings.tls


def test_options_the_url_does_not_set_are_left_to_each_part() -> None:
    settings = RedisSettings.from_url("redis://127.0.0.1")
    assert (settings.max_connections, settings.socket_timeout, settings.connect_timeout) == (
        None,
        None,
        None,
    )
    assert (settings.port, settings.db, settings.password) == (6379, 0, None)
    assert settings.client_url == "redis://127.0.0.1"


def test_db_in_the_query_wins_over_the_path_as_in_redis_py() -> None:
    assert RedisSettings.from_url("redis://h/2?db=5").db == 5


@pytest.mark.parametrize(
    ("url", "client_url", "tls"),
    [
        ("redis+cluster://h:7000", "redis://h:7000", False),
        ("rediss+cluster://:pw@h:7000?ssl_cert_reqs=none", "rediss://:pw@h:7000?ssl_cert_reqs=none",
         True),
        ("REDIS+CLUSTER://h:7000", "redis://h:7000", False),
    ],
)  # fmt: skip
def test_a_cluster_is_told_by_its_scheme_and_redis_py_gets_the_plain_scheme(
    url: str, client_url: str, tls: bool
) -> None:
    settings = RedisSettings.from_url(url)
    assert settings.cluster
    assert settings.tls is tls
    assert settings.client_url == client_url


@pytest.mark.parametrize(
    "url", ["memory://", "sqlite:///x.db", "redis", "postgres://u:hunter2@h/d"]
)
def test_a_url_that_is_not_redis_is_refused_by_name(url: str) -> None:
    with pytest.raises(ValueError, match="not a Redis URL") as caught:
        RedisSettings.from_url(url)
    message = str(caught.value)
    assert "hunter2" not in message
    assert url.replace("hunter2", "***") in message


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("max_connections=0", "max_connections must be a whole number >= 1, not '0'"),
        ("max_connections=ten", "max_connections must be a whole number >= 1, not 'ten'"),
        ("max_connections=1.5", "max_connections must be a whole number >= 1, not '1.5'"),
        ("socket_timeout=-1", "socket_timeout must be a number of seconds > 0, not '-1'"),
        ("socket_timeout=0", "socket_timeout must be a number of seconds > 0, not '0'"),
        ("connect_timeout=soon", "connect_timeout must be a number of seconds > 0, not 'soon'"),
        ("connect_timeout=nan", "connect_timeout must be a number of seconds > 0, not 'nan'"),
        ("socket_timeout=inf", "socket_timeout must be a number of seconds > 0, not 'inf'"),
    ],
)
def test_a_bad_option_value_is_refused_naming_the_option_and_the_url(
    option: str, expected: str
) -> None:
    url = f"redis://:hunter2@h:6379/0?{option}"
    with pytest.raises(ValueError) as caught:
        RedisSettings.from_url(url)
    message = str(caught.value)
    assert message.startswith(expected)
    assert f"redis://:***@h:6379/0?{option}" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://h:port/0", "bad Redis URL 'redis://h:port/0'"),
        ("redis://h:6379/zero", "bad Redis URL 'redis://h:6379/zero'"),
        ("rediss://h?ssl_cert_reqs=maybe", "ssl_cert_reqs must be none, optional or required"),
    ],
)
def test_a_bad_port_db_or_tls_mode_is_refused(url: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        RedisSettings.from_url(url)


def test_the_repr_masks_the_password() -> None:
    settings = RedisSettings.from_url("rediss://app:hunter2@h:6380/0")
    assert repr(settings) == "RedisSettings('rediss://app:***@h:6380/0')"


def test_the_url_without_our_options_keeps_everything_else() -> None:
    url = f"rediss+cluster://:pw@h:7000?{OPTIONS}&ssl_cert_reqs=none"
    assert RedisSettings.from_url(url).without_own_options() == (
        "rediss+cluster://:pw@h:7000?ssl_cert_reqs=none"
    )
    plain = "redis://h:6379/2"
    assert RedisSettings.from_url(plain).without_own_options() == plain


async def test_the_bare_redis_llm_cache_gets_the_stores_url_without_the_stores_options() -> None:
    store = f"redis://127.0.0.1:1/4?{OPTIONS}"
    llm = cached_llm(SimLLM(), "redis", ttl_s=60, store_url=store)
    try:
        assert llm.backend.url == "redis://127.0.0.1:1/4"
    finally:
        await llm.close()
    with pytest.raises(ValueError, match="the store is not Redis"):
        cached_llm(SimLLM(), "redis", ttl_s=60, store_url="sqlite:///x.db")


async def test_a_light_client_has_default_timeouts_and_none_of_our_options() -> None:
    client = RedisSettings.from_url("redis://127.0.0.1:1/0?max_connections=3").light_client()
    try:
        assert isinstance(client, Redis)
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["socket_connect_timeout"], kwargs["socket_timeout"]) == (1.0, 2.0)
        assert "max_connections" not in kwargs
    finally:
        await client.aclose()
    cluster = RedisSettings.from_url("redis+cluster://127.0.0.1:1").light_client()
    assert isinstance(cluster, RedisCluster)
    await cluster.aclose()


async def test_a_pooled_client_takes_the_callers_values_not_the_urls() -> None:
    settings = RedisSettings.from_url(f"redis://127.0.0.1:1/0?{OPTIONS}")
    client = settings.pooled_client(max_connections=7, connect_timeout=0.3, pool_timeout=1.5)
    try:
        assert isinstance(client, Redis)
        pool = client.connection_pool
        assert isinstance(pool, BlockingConnectionPool)
        assert (pool.max_connections, pool.timeout) == (7, 1.5)
        kwargs = pool.connection_kwargs
        assert kwargs["socket_connect_timeout"] == 0.3
        # No socket timeout unless asked (XREAD BLOCK), and none of our own options leak in.
        assert "socket_timeout" not in kwargs and "connect_timeout" not in kwargs
    finally:
        await client.aclose()


def test_the_pipelining_client_gets_the_servers_facts_from_the_url() -> None:
    wire = RedisSettings.from_url("redis://app:p%2Fw@h:6390/2?socket_timeout=0.5").wire()
    assert (wire.host, wire.port, wire.db) == ("h", 6390, 2)
    assert (wire.username, wire.password) == ("app", "p/w")
    assert (wire.timeout, wire.connect_timeout) == (0.5, 1.0)
    assert wire.ssl_context is None
    tuned = RedisSettings.from_url("redis://h").wire(timeout=3.0, connect_timeout=0.1)
    assert (tuned.timeout, tuned.connect_timeout) == (3.0, 0.1)


async def test_the_shared_pipelining_client_is_one_per_server_and_closes_with_its_last_user() -> (
    None
):
    settings = RedisSettings.from_url("redis://h:6390/2")
    first = settings.wire(shared=True)
    assert settings.wire(shared=True) is first
    assert RedisSettings.from_url("redis://h:6390/2?socket_timeout=2").wire(shared=True) is first
    # Another server, other timeouts, or a client of its own (a blocking command's): not it.
    assert RedisSettings.from_url("redis://h:6390/3").wire(shared=True) is not first
    assert settings.wire(timeout=9.0, shared=True) is not first
    assert settings.wire() is not first
    # Three users so far (the same server and timeouts asked thrice): closed thrice.
    await first.close()
    await first.close()
    assert settings.wire(shared=True) is first  # one user left (and now another)
    await first.close()
    await first.close()
    assert settings.wire(shared=True) is not first  # the last user closed it


def test_the_pipelining_client_speaks_tls_as_the_url_asks() -> None:
    strict = RedisSettings.from_url("rediss://h:6380/0").wire()
    assert strict.ssl_context is not None
    assert strict.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert strict.ssl_context.check_hostname
    lax = RedisSettings.from_url("rediss://h:6380/0?ssl_cert_reqs=none").wire()
    assert lax.ssl_context is not None
    assert lax.ssl_context.verify_mode == ssl.CERT_NONE
    assert not lax.ssl_context.check_hostname


def test_the_pipelining_client_is_refused_for_a_cluster() -> None:
    with pytest.raises(ValueError, match="not a cluster"):
        RedisSettings.from_url("redis+cluster://h:7000").wire()


async def test_every_redis_backed_part_reads_its_url_through_the_same_settings() -> None:
    url = f"rediss+cluster://:pw@h:7000?{OPTIONS}"
    expected = RedisSettings.from_url(url)
    store = create_store(url)
    broker = create_broker(url)
    limiter = create_limiter(url, hold_s=1.0)
    keys = create_key_store(url)
    cache = create_cache_backend(url, ttl_s=60)
    assert isinstance(store, RedisStore) and isinstance(broker, RedisBroker)
    assert isinstance(limiter, RedisLimiter) and isinstance(keys, RedisKeyStore)
    assert isinstance(cache, RedisCacheBackend)
    for part in (store, broker, limiter, keys):
        assert part.settings == expected, part
    assert cache.cluster
    await cache.close()
    # The store applies the URL's options over its own defaults.
    assert (store.max_connections, store.socket_timeout, store.connect_timeout) == (50, 0.5, 0.25)


def test_every_part_refuses_a_bad_option_when_it_is_built() -> None:
    url = "redis://h:6379/0?socket_timeout=never"
    for build in (
        lambda: create_store(url),
        lambda: create_broker(url),
        lambda: create_limiter(url, hold_s=1.0),
        lambda: create_key_store(url),
        lambda: create_cache_backend(url, ttl_s=60),
    ):
        with pytest.raises(ValueError, match="socket_timeout must be"):
            build()


def test_only_a_redis_store_is_shared_and_lends_its_url_to_the_broker_and_limiter() -> None:
    for store in ("redis://h/0", "rediss+cluster://h:7000"):
        assert shared_store(store)
        settings = Settings(store=store, allow_no_auth=True)
        assert broker_url(settings) == limiter_url(settings) == store
    for store in ("sqlite:///x.db", "memory://"):
        assert not shared_store(store)
    # PostgreSQL is shared by the fleet, but streams and limits are not kept in it.
    for store in ("postgres://h/db", "postgresql://h/db"):
        assert shared_store(store)
        pg = Settings(store=store, allow_no_auth=True)
        assert broker_url(pg) == limiter_url(pg) == "memory://"
    embedded = Settings(store="sqlite:///x.db")
    assert broker_url(embedded) == limiter_url(embedded) == "memory://"


def test_redis_py_is_imported_without_opentelemetry_unless_it_is_loaded() -> None:
    """A part built on Redis imports redis-py as it is where OpenTelemetry is not installed
    (its metrics SDK is a large import redis-py never uses here), and as it is where the
    process has loaded OpenTelemetry already (`--otel`)."""

    def loaded(first: str) -> list[str]:
        probe = (
            f"{first}\nimport sys\nfrom agenthost.stores import create_store\n"
            "create_store('redis://127.0.0.1:1/0')\n"
            "print(' '.join(m for m in ('redis', 'opentelemetry.sdk.metrics', 'psutil')"
            " if m in sys.modules))"
        )
        run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        return run.stdout.split()

    assert loaded("") == ["redis"]
    assert loaded("import opentelemetry.trace") == ["redis", "opentelemetry.sdk.metrics", "psutil"]
