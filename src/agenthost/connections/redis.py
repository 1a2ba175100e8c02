"""Redis URLs and the clients built from them: the one place agenthost parses a Redis URL.

Every Redis-backed part (store, broker, rate limiter, API keys, LLM cache) builds its clients
from a `RedisSettings`, so they all read the same URL the same way; a URL that is not Redis, or
an option that is not a valid number, is refused by `RedisSettings.from_url` with a ValueError
that names the URL (password masked).
"""

from __future__ import annotations

import contextlib
import math
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from agenthost.connections.redis_py import load_redis_py

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster
    from redis.retry import Retry

    from agenthost.connections.redis_wire import RedisWire

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_SOCKET_TIMEOUT",
    "OWN_OPTIONS",
    "REDIS_SCHEMES",
    "RedisSettings",
    "close_clients",
    "is_redis_url",
]

REDIS_SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster")
"""URL schemes of a Redis server: `rediss` is TLS, `+cluster` a Redis Cluster (any node)."""

OWN_OPTIONS = ("max_connections", "socket_timeout", "connect_timeout")
"""Query options agenthost reads itself; redis-py never sees them."""

DEFAULT_CONNECT_TIMEOUT = 1.0
DEFAULT_SOCKET_TIMEOUT = 2.0

_CERT_REQS = ("none", "optional", "required")


def is_redis_url(url: str) -> bool:
    """Whether `url` names a Redis server (single or cluster, plain or TLS)."""
    scheme, sep, _ = url.partition("://")
    return bool(sep) and scheme.lower() in REDIS_SCHEMES


def _masked(url: str) -> str:
    """`url` with its password replaced, for error messages and reprs (they reach logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    netloc = f"{user}:***@" + parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _count(url: str, value: str | None) -> int | None:
    """`max_connections`: a whole number >= 1, or None when the URL does not set it."""
    if value is None:
        return None
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(
            f"max_connections must be a whole number >= 1, not {value!r}, "
            f"in Redis URL {_masked(url)!r}"
        )
    return count


def _seconds(url: str, key: str, value: str | None) -> float | None:
    """A timeout: a finite number of seconds > 0, or None when the URL does not set it."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(
            f"{key} must be a number of seconds > 0, not {value!r}, in Redis URL {_masked(url)!r}"
        )
    return seconds


@dataclass(frozen=True, kw_only=True, repr=False)
class RedisSettings:
    """One Redis server or cluster as a URL describes it, and the clients that talk to it.

    `max_connections`, `socket_timeout` and `connect_timeout` are None unless the URL sets
    them: each part then applies its own default.
    """

    url: str
    """The URL as given."""
    client_url: str
    """The URL redis-py gets: no `+cluster` in the scheme, none of agenthost's options."""
    cluster: bool
    host: str
    port: int
    username: str | None
    password: str | None
    db: int
    tls: bool
    ssl_ca_certs: str | None
    ssl_cert_reqs: str
    max_connections: int | None
    socket_timeout: float | None
    connect_timeout: float | None

    @classmethod
    def from_url(cls, url: str) -> RedisSettings:
        """Parse `url`; ValueError naming it for a non-Redis scheme or a bad value."""
        if not is_redis_url(url):
            raise ValueError(
                f"not a Redis URL: {_masked(url)!r} (expected redis://, rediss://, "
                "redis+cluster:// or rediss+cluster://)"
            )
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        cluster = scheme.endswith("+cluster")
        scheme = scheme.removesuffix("+cluster")
        pairs = parse_qsl(parts.query)
        own = {key: value for key, value in pairs if key in OWN_OPTIONS}
        rest = [(key, value) for key, value in pairs if key not in OWN_OPTIONS]
        query = dict(rest)
        try:
            port = parts.port or 6379
            # redis-py reads `?db=` before the path; so does the pipelining client.
            db = int(query.get("db") or unquote(parts.path).strip("/") or 0)
        except ValueError as exc:
            raise ValueError(f"bad Redis URL {_masked(url)!r}: {exc}") from None
        cert_reqs = query.get("ssl_cert_reqs", "required").lower()
        if cert_reqs not in _CERT_REQS:
            raise ValueError(
                f"ssl_cert_reqs must be none, optional or required, not {cert_reqs!r}, "
                f"in Redis URL {_masked(url)!r}"
            )
        return cls(
            url=url,
            client_url=urlunsplit((scheme, parts.netloc, parts.path, urlencode(rest), "")),
            cluster=cluster,
            host=parts.hostname or "127.0.0.1",
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            db=db,
            tls=scheme == "rediss",
            ssl_ca_certs=query.get("ssl_ca_certs"),
            ssl_cert_reqs=cert_reqs,
            max_connections=_count(url, own.get("max_connections")),
            socket_timeout=_seconds(url, "socket_timeout", own.get("socket_timeout")),
            connect_timeout=_seconds(url, "connect_timeout", own.get("connect_timeout")),
        )

    def __repr__(self) -> str:
        return f"RedisSettings({_masked(self.url)!r})"

    def without_own_options(self) -> str:
        """The URL as given (scheme included) minus agenthost's options: for another part
        that shares this server but not the pool sizes and timeouts set for the first."""
        parts = urlsplit(self.url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k not in OWN_OPTIONS]
        return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))

    # -- clients ----------------------------------------------------------------------------
    # The clients are imported here, not at the top: `agenthost.core.settings` asks
    # `is_redis_url`, and a process that never talks to Redis should not pay to import
    # redis-py (about 0.2 s); `load_redis_py` says how it is imported.

    def light_client(self) -> Redis | RedisCluster:
        """A redis-py client for calls off the turn's hot path (API keys, the limiter on a
        cluster, the LLM cache): the URL's timeouts, else 1 s to connect and 2 s per reply."""
        options: dict[str, Any] = {
            "socket_connect_timeout": self.connect_timeout or DEFAULT_CONNECT_TIMEOUT,
            "socket_timeout": self.socket_timeout or DEFAULT_SOCKET_TIMEOUT,
        }
        load_redis_py()
        if self.cluster:
            from redis.asyncio.cluster import RedisCluster

            return RedisCluster.from_url(self.client_url, **options)
        from redis.asyncio import Redis

        return Redis.from_url(self.client_url, **options)

    def pooled_client(
        self,
        *,
        max_connections: int,
        connect_timeout: float,
        pool_timeout: float,
        socket_timeout: float | None = None,
        retry: Retry | None = None,
        health_check_interval: int | None = None,
    ) -> Redis | RedisCluster:
        """A redis-py client with up to `max_connections` connections (per node on a
        cluster). On a single server the pool blocks: a burst past the limit waits up to
        `pool_timeout` for a free connection rather than failing (redis-py's cluster client
        has no such pool). `socket_timeout` None: redis-py's default (5 s in redis-py 8),
        which a blocking command (XREAD BLOCK) must stay under. The URL's own options are
        not applied here: the caller has already weighed them against its defaults."""
        options: dict[str, Any] = {
            "max_connections": max_connections,
            "socket_connect_timeout": connect_timeout,
        }
        if socket_timeout is not None:
            options["socket_timeout"] = socket_timeout
        if retry is not None:
            options["retry"] = retry
        if health_check_interval is not None:
            options["health_check_interval"] = health_check_interval
        load_redis_py()
        if self.cluster:
            from redis.asyncio.cluster import RedisCluster

            return RedisCluster.from_url(self.client_url, **options)
        from redis.asyncio import BlockingConnectionPool, Redis

        pool = BlockingConnectionPool.from_url(self.client_url, timeout=pool_timeout, **options)
        return Redis(connection_pool=pool)

    def wire(
        self,
        *,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        shared: bool = False,
    ) -> RedisWire:
        """The pipelining client, for a single server only (it follows no cluster slot map).
        Timeouts not given: the URL's, else 2 s per reply and 1 s to connect. `shared`: the
        event loop's one client for this server and these timeouts, whichever part asks
        (`redis_wire.shared_wire`); never for a blocking command."""
        if self.cluster:
            raise ValueError(f"the pipelining client talks to one server, not a cluster: {self!r}")
        from agenthost.connections.redis_wire import shared_wire

        timeout = timeout or self.socket_timeout or DEFAULT_SOCKET_TIMEOUT
        connect_timeout = connect_timeout or self.connect_timeout or DEFAULT_CONNECT_TIMEOUT
        if not shared:
            return self._new_wire(timeout, connect_timeout)
        key = (self.host, self.port, self.username, self.password, self.db, self.tls,
               self.ssl_ca_certs, self.ssl_cert_reqs, timeout, connect_timeout)  # fmt: skip
        return shared_wire(key, lambda: self._new_wire(timeout, connect_timeout))

    def _new_wire(self, timeout: float, connect_timeout: float) -> RedisWire:
        from agenthost.connections.redis_wire import RedisWire

        context = None
        if self.tls:
            context = ssl.create_default_context(cafile=self.ssl_ca_certs)
            if self.ssl_cert_reqs != "required":
                context.check_hostname = False
                context.verify_mode = (
                    ssl.CERT_NONE if self.ssl_cert_reqs == "none" else ssl.CERT_OPTIONAL
                )
        return RedisWire(
            self.host,
            self.port,
            username=self.username,
            password=self.password,
            db=self.db,
            ssl_context=context,
            timeout=timeout,
            connect_timeout=connect_timeout,
        )


async def close_clients(wire: RedisWire | None, client: Redis | RedisCluster | None) -> None:
    """Close a pipelining client and a redis-py client, either of which may be None (a
    redis-py client whose connection is already gone may fail to close: ignored)."""
    if wire is not None:
        await wire.close()
    if client is not None:
        with contextlib.suppress(Exception):
            await client.aclose()
