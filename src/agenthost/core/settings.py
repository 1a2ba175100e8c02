"""Server settings: one typed object, every field an `AGENTHOST_*` environment variable and an
`agenthost serve` flag of the same name (twelve-factor).

`Settings.from_env()` reads the environment; the CLI passes flags over it. Defaults are the
embedded deployment: SQLite file store, in-process simulated LLM, no external service.
"""

from __future__ import annotations

import contextlib
import math
import os
import typing
from collections.abc import Iterator
from typing import Any

import msgspec

from agenthost.connections.redis import is_redis_url
from agenthost.core.tenant_classes import TenantClasses

__all__ = [
    "DEFAULT_LLM",
    "ENV_PREFIX",
    "SETTINGS_HELP",
    "Settings",
    "SettingsError",
    "blame",
    "broker_url",
    "env_name",
    "is_postgres_url",
    "limiter_url",
    "parse_setting",
    "playground_on",
    "shared_store",
    "store_ttl",
    "worker_count",
]

ENV_PREFIX = "AGENTHOST_"

DEFAULT_LLM = "sim://?ttft_ms=150&tokens_per_s=25"
"""The simulated model at a human pace, so a first streamed turn is seen to stream (plain
`sim://` is instant: tests and benchmarks say what they measure)."""


class SettingsError(ValueError):
    """Settings that cannot work; `problems` pairs each field with what is wrong with it, so
    the command line can say where the value came from (a flag or an environment variable)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("invalid settings: " + "; ".join(f"{f} {m}" for f, m in problems))


@contextlib.contextmanager
def blame(field: str) -> Iterator[None]:
    """Turn a ValueError or TypeError raised while building from `field` into a
    SettingsError that names it (a bad store URL, an agent that cannot be imported)."""
    try:
        yield
    except SettingsError:
        raise
    except (ValueError, TypeError) as exc:
        raise SettingsError([(field, str(exc))]) from exc


_EXPECTED = {int: "a whole number", float: "a number", bool: "true or false"}


def parse_setting(field: str, text: str) -> Any:
    """A text value (a flag's or an environment variable's) as the field's type;
    SettingsError if it is not one."""
    if field in _LISTS:  # URLs separated by whitespace
        return text.split()
    kind = _FIELD_TYPES[field]
    try:
        return msgspec.convert(text, kind, strict=False)
    except msgspec.ValidationError:
        expected = _EXPECTED.get(kind, str(kind))
        raise SettingsError([(field, f"expected {expected}")]) from None


class Settings(msgspec.Struct, kw_only=True):
    """Everything `agenthost serve` can be told; see SETTINGS_HELP for each field."""

    app: str | None = None
    app_dir: str = "."
    host: str = "127.0.0.1"
    port: int = 8000
    workers: str = "1"
    store: str = "sqlite:///./agenthost.db"
    store_read_replica: list[str] = msgspec.field(default_factory=list)
    cache: str | None = None
    cache_ttl: float = 3600.0
    llm: str = DEFAULT_LLM
    llm_model: str | None = None
    llm_api_key: str | None = None
    llm_transport: str = "aiohttp"
    llm_cache: str | None = None
    llm_cache_ttl: float = 300.0
    session_ttl: float = 3600.0
    retention: float = 0.0
    history_window: int = 50
    window_cache_mb: float = 64.0
    max_body_bytes: int = 1024 * 1024
    max_message_chars: int = 32_000
    max_metadata_bytes: int = 16 * 1024
    max_metadata_depth: int = 8
    ws_max_frame_bytes: int = 256 * 1024
    ws_max_frames_per_s: float = 20.0
    admin_token: str | None = None
    metrics_require_admin: bool = False
    auth: str = "none"
    allow_no_auth: bool = False
    auth_cache_ttl: float = 5.0
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_tenant_claim: str = "tenant"
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    rate_limit_turns_per_minute: int = 0
    rate_limit_burst: int = 1
    rate_limit_max_inflight: int = 0
    rate_limiter: str | None = None
    lease_ttl: float = 10.0
    enqueue_timeout: float = 30.0
    turn_timeout: float = 300.0
    max_inflight_turns: int = 0
    detailed_errors: bool = False
    drain_timeout: float = 90.0
    broker: str | None = None
    stream_ttl: float = 300.0
    chunk_coalesce_ms: float = 20.0
    sse_heartbeat_s: float = 15.0
    ws_send_buffer: int = 256
    ws_send_buffer_bytes: int = 1024 * 1024
    ws_slow_consumer_grace: float = 30.0
    socket_send_buffer: int = 0
    ws_idle_timeout: float = 300.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
    max_connections: int = 20_000
    log_level: str = "info"
    log_format: str = "auto"
    log_content: bool = False
    access_log: bool = True
    otel: str = "none"
    server_protocols: str = "auto"
    openai_model: str = "agenthost"
    openai_task_model: str = "agenthost-tasks"
    cors_origins: str = ""
    playground: str = "auto"
    heartbeat_interval: float = 2.0
    grafana_url: str = ""
    role: str = "all"
    worker_concurrency: int = 16
    max_queued_turns: int = 1000
    tenant_classes: str = ""
    callback_secret: str | None = None
    callback_allow_private: bool = False

    def __post_init__(self) -> None:
        problems: list[tuple[str, str]] = []
        if not 0 < self.port < 65536:
            problems.append(("port", "must be 1-65535"))
        problems += self._workers_problems()
        if self.session_ttl <= 0:
            problems.append(("session_ttl", "must be > 0 seconds"))
        if self.retention < 0:
            problems.append(("retention", "must be >= 0 seconds (0 = keep until deleted)"))
        elif self.retention > 0 and not is_postgres_url(self.store):
            problems.append(
                ("retention", "applies to a postgresql:// store; other stores use session_ttl")
            )
        if self.store_read_replica and not (
            is_postgres_url(self.store) and all(is_postgres_url(u) for u in self.store_read_replica)
        ):
            problems.append(
                ("store_read_replica", "postgresql:// replicas of a postgresql:// store")
            )
        if self.cache is not None and not (
            is_postgres_url(self.store) and is_redis_url(self.cache)
        ):
            problems.append(
                ("cache", "redis:// or redis+cluster:// in front of a postgresql:// store")
            )
        if self.cache_ttl <= 0:
            problems.append(("cache_ttl", "must be > 0 seconds"))
        if self.history_window < 0:
            problems.append(("history_window", "must be >= 0"))
        if self.window_cache_mb < 0:
            problems.append(("window_cache_mb", "must be >= 0 (0 = off)"))
        if self.max_body_bytes < 1024:
            problems.append(("max_body_bytes", "must be >= 1024"))
        if self.max_message_chars < 1:
            problems.append(("max_message_chars", "must be >= 1"))
        if self.max_metadata_bytes < 2:
            problems.append(("max_metadata_bytes", "must be >= 2 (room for {})"))
        if self.max_metadata_depth < 1:
            problems.append(("max_metadata_depth", "must be >= 1"))
        if self.ws_max_frame_bytes < 1024:
            problems.append(("ws_max_frame_bytes", "must be >= 1024"))
        if not self.ws_max_frames_per_s > 0:
            problems.append(("ws_max_frames_per_s", "must be > 0"))
        if self.lease_ttl < 0.2:
            problems.append(("lease_ttl", "must be >= 0.2 seconds"))
        if self.enqueue_timeout < 0:
            problems.append(("enqueue_timeout", "must be >= 0"))
        if self.turn_timeout <= 0:
            problems.append(("turn_timeout", "must be > 0"))
        if self.llm_transport not in ("aiohttp", "httpx"):
            problems.append(("llm_transport", "must be aiohttp or httpx"))
        if self.llm_cache_ttl <= 0:
            problems.append(("llm_cache_ttl", "must be > 0 seconds"))
        if self.llm_cache is not None:
            cache_scheme = self.llm_cache.split("://", 1)[0].lower()
            if cache_scheme == "redis" and "://" not in self.llm_cache:
                if not self.store.lower().startswith("redis"):
                    problems.append(("llm_cache", "redis (the store's Redis) needs a Redis store"))
            elif cache_scheme != "memory" and not cache_scheme.startswith("redis"):
                problems.append(("llm_cache", "must be memory://, redis://... or redis"))
        if self.stream_ttl <= 0:
            problems.append(("stream_ttl", "must be > 0"))
        if not self.sse_heartbeat_s > 0:
            problems.append(("sse_heartbeat_s", "must be > 0 seconds"))
        if self.chunk_coalesce_ms < 0:
            problems.append(("chunk_coalesce_ms", "must be >= 0"))
        if self.ws_send_buffer < 1:
            problems.append(("ws_send_buffer", "must be >= 1"))
        if self.ws_send_buffer_bytes < 64 * 1024:
            problems.append(("ws_send_buffer_bytes", "must be >= 65536"))
        if self.socket_send_buffer and self.socket_send_buffer < 4096:
            problems.append(("socket_send_buffer", "must be 0 (the kernel's) or >= 4096"))
        if not self.ws_slow_consumer_grace > 0:
            problems.append(("ws_slow_consumer_grace", "must be > 0 seconds"))
        if self.ws_idle_timeout <= 0:
            problems.append(("ws_idle_timeout", "must be > 0"))
        for name in ("header_timeout", "body_timeout", "keep_alive_timeout"):
            if not getattr(self, name) > 0:
                problems.append((name, "must be > 0 seconds"))
        if self.max_connections < 1:
            problems.append(("max_connections", "must be >= 1"))
        if self.drain_timeout < 0:
            problems.append(("drain_timeout", "must be >= 0"))
        if self.max_inflight_turns < 0:
            problems.append(("max_inflight_turns", "must be >= 0 (0 = no limit)"))
        if self.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
            problems.append(("log_level", "must be debug, info, warning, error or critical"))
        if self.log_format not in ("auto", "json", "console"):
            problems.append(("log_format", "must be auto, json or console"))
        if self.otel not in ("none", "console", "otlp"):
            problems.append(("otel", "must be none, console or otlp"))
        if self.server_protocols not in ("auto", "stock"):
            problems.append(("server_protocols", "must be auto or stock"))
        if self.playground not in ("auto", "on", "off"):
            problems.append(("playground", "must be auto, on or off"))
        if self.heartbeat_interval < 0.2:
            problems.append(("heartbeat_interval", "must be >= 0.2 seconds"))
        problems += self._auth_problems()
        problems += self._role_problems()
        if problems:
            raise SettingsError(problems)

    def _workers_problems(self) -> list[tuple[str, str]]:
        text = self.workers.strip().lower()
        if text != "auto" and not (text.isdigit() and int(text) >= 1):
            return [("workers", "must be a whole number >= 1, or auto (one per core)")]
        if worker_count(self) > 1 and not shared_store(self.store):
            return [
                (
                    "workers",
                    "more than one process needs a store they share (redis://, "
                    "redis+cluster://, postgresql://): sqlite:// and memory:// hold leases, "
                    "enqueued turns and interrupts in one process",
                )
            ]
        return []

    def _auth_problems(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if self.auth not in ("none", "keys", "jwt"):
            problems.append(("auth", "must be none, keys or jwt"))
        elif self.auth == "none" and shared_store(self.store) and not self.allow_no_auth:
            problems.append(
                (
                    "auth",
                    "none is only for the embedded default (sqlite:// or memory:// store): "
                    "use --auth keys or --auth jwt with a shared store, or --allow-no-auth for "
                    "a private test fleet",
                )
            )
        elif self.auth == "jwt" and not (self.jwt_secret or self.jwt_public_key):
            problems.append(("auth", "jwt needs jwt_secret (HS256) or jwt_public_key (RS256)"))
        if self.auth_cache_ttl < 0:
            problems.append(("auth_cache_ttl", "must be >= 0"))
        if self.rate_limit_turns_per_minute < 0:
            problems.append(("rate_limit_turns_per_minute", "must be >= 0 (0 = no limit)"))
        if self.rate_limit_max_inflight < 0:
            problems.append(("rate_limit_max_inflight", "must be >= 0 (0 = no limit)"))
        if self.rate_limit_burst < 1:
            problems.append(("rate_limit_burst", "must be >= 1"))
        limited = (
            self.auth == "keys" or self.rate_limit_turns_per_minute or self.rate_limit_max_inflight
        )
        if limited and is_postgres_url(self.store) and not self.rate_limiter:
            problems.append(
                (
                    "rate_limiter",
                    "rate limits with a postgresql:// store need Redis to count them fleet-wide: "
                    "set --rate-limiter redis://... (--rate-limiter memory:// counts per process)",
                )
            )
        return problems

    def _role_problems(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if self.role not in ("all", "api", "worker"):
            problems.append(("role", "must be all, api or worker"))
        elif self.role != "all":
            if not shared_store(self.store):
                problems.append(
                    (
                        "role",
                        f"{self.role} needs the work queue of a shared store (redis://, "
                        "redis+cluster:// or postgresql://); sqlite:// and memory:// serve "
                        "one process: use --role all",
                    )
                )
            elif not is_redis_url(broker_url(self)):
                problems.append(
                    (
                        "role",
                        f"{self.role} hands a turn's events between processes: set "
                        "--broker redis://... (a postgresql:// store has no broker of its own)",
                    )
                )
        if self.worker_concurrency < 1:
            problems.append(("worker_concurrency", "must be >= 1"))
        if self.max_queued_turns < 0:
            problems.append(("max_queued_turns", "must be >= 0 (0 = no limit)"))
        try:
            TenantClasses(self.tenant_classes)
        except ValueError as exc:
            problems.append(("tenant_classes", str(exc)))
        return problems

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from `AGENTHOST_*` variables, then `overrides` (None values ignored)."""
        env = os.environ if environ is None else environ
        raw: dict[str, Any] = {}
        for name in cls.__struct_fields__:
            value = env.get(env_name(name))
            if value is not None and value != "":
                raw[name] = parse_setting(name, value)
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**raw)


_FIELD_TYPES: dict[str, Any] = typing.get_type_hints(Settings)


_LISTS = {"store_read_replica"}


def worker_count(settings: Settings) -> int:
    """How many server processes `--workers` asks for: `auto` is one per core this process
    may run on."""
    text = settings.workers.strip().lower()
    if text == "auto":
        affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere every core
        return max(1, len(affinity(0)) if affinity else os.cpu_count() or 1)
    return int(text)


def broker_url(settings: Settings) -> str:
    """The broker to use: the configured one, else the store's Redis, else in-process."""
    if settings.broker:
        return settings.broker
    if is_redis_url(settings.store):
        return settings.store
    return "memory://"


def shared_store(store: str) -> bool:
    """Whether the store is shared by a fleet (Redis, PostgreSQL), not this process's own."""
    return is_redis_url(store) or is_postgres_url(store)


def is_postgres_url(url: str) -> bool:
    return url.lower().startswith(("postgresql://", "postgres://"))


def playground_on(settings: Settings) -> bool:
    """Whether /playground is served: `on`, or `auto` with the embedded store."""
    return settings.playground == "on" or (
        settings.playground == "auto" and not shared_store(settings.store)
    )


def store_ttl(settings: Settings) -> float:
    """How long a session outlives its last turn: `session_ttl`, except in PostgreSQL, the
    system of record, where it is kept until deleted (or for `retention`, when set)."""
    if is_postgres_url(settings.store):
        return settings.retention if settings.retention > 0 else math.inf
    return settings.session_ttl


def limiter_url(settings: Settings) -> str:
    """Where rate limits are counted: the configured URL, else the store's Redis, else here."""
    if settings.rate_limiter:
        return settings.rate_limiter
    if is_redis_url(settings.store):
        return settings.store
    return "memory://"


def env_name(field: str) -> str:
    """`session_ttl` -> `AGENTHOST_SESSION_TTL`."""
    return ENV_PREFIX + field.upper()


SETTINGS_HELP: dict[str, str] = {
    "app": "The agent, as module:attribute (e.g. mybot:agent). Default: a built-in demo agent "
    "that answers through the configured LLM.",
    "app_dir": "Directory put first on the import path to find the agent's module (as "
    "uvicorn's --app-dir).",
    "host": "Address to listen on (0.0.0.0 in a container).",
    "port": "TCP port to listen on.",
    "workers": "Server processes sharing the port (auto: one per core), restarted when they "
    "die; needs a shared store (Redis, PostgreSQL).",
    "store": "Session store: sqlite:///path.db (embedded), memory://, redis://host:port/db, "
    "rediss://..., redis+cluster://host:port.",
    "llm": "sim:// (the in-process simulator; ?ttft_ms=, ?tokens_per_s=, ?latency_ms= pace "
    "it) or an OpenAI-compatible https://host/v1.",
    "llm_model": "Model name sent to an OpenAI-compatible LLM.",
    "llm_api_key": "API key for an OpenAI-compatible LLM.",
    "llm_transport": "The openai SDK's HTTP transport: aiohttp (measured cheaper, "
    "docs/benchmarks.md) or httpx (the SDK's default).",
    "llm_cache": "Cache temperature-0 LLM answers (single-flight): memory://, redis://host/db "
    "or redis (the store's). Unset: off.",
    "llm_cache_ttl": "Seconds a cached LLM answer is served.",
    "session_ttl": "Seconds a session lives after its last turn (all its data); not for "
    "postgresql://, which keeps sessions until deleted.",
    "store_read_replica": "postgresql:// only: a read replica for history reads; repeatable "
    "(environment: URLs separated by spaces).",
    "cache": "postgresql:// only: Redis in front of it (redis://, redis+cluster://) for "
    "the window and answers; turns commit in PostgreSQL.",
    "cache_ttl": "Seconds a session's cache entry outlives its last commit (then the next "
    "turn reads PostgreSQL).",
    "retention": "postgresql:// only: remove sessions idle longer than this many seconds "
    "(0: keep until deleted).",
    "history_window": "How many of the newest messages the agent is handed each turn.",
    "window_cache_mb": "Megabytes of history windows a process keeps, so a session's next "
    "turn here reads only new messages (0: off).",
    "max_body_bytes": "Largest request body; larger gets 413.",
    "max_message_chars": "Longest message, in characters; longer gets 413 message_too_long "
    "(WebSocket: an error frame).",
    "max_metadata_bytes": "Largest metadata object, as JSON; larger gets 413 metadata_too_large.",
    "max_metadata_depth": "Deepest nesting in metadata (the object itself is level 1); deeper "
    "gets 422 metadata_too_deep.",
    "ws_max_frame_bytes": "Largest WebSocket frame a client may send; larger closes with 1009.",
    "ws_max_frames_per_s": "WebSocket frames a client may send per second (bursts up to one "
    "second's worth); faster closes with 1008.",
    "metrics_require_admin": "Serve /metrics only with the admin token.",
    "auth": "Who may call: none (anyone; embedded store only), keys (`agenthost keys create`) "
    "or jwt (bearer JWTs).",
    "allow_no_auth": "Allow --auth none with a shared (Redis) store: a private test fleet only.",
    "auth_cache_ttl": "Seconds each process caches an API key lookup; a revoked key stops "
    "working within this time.",
    "jwt_secret": "HS256 secret for --auth jwt.",
    "jwt_public_key": "RS256 public key (PEM, or @path to a PEM file) for --auth jwt.",
    "jwt_tenant_claim": "The JWT claim that names the tenant.",
    "jwt_audience": "Required JWT audience (aud), if set.",
    "jwt_issuer": "Required JWT issuer (iss), if set.",
    "rate_limit_turns_per_minute": "Turns per minute per tenant for JWT and --auth none "
    "callers (API keys carry their own); 0 = no limit; past it 429.",
    "rate_limit_burst": "Turns a tenant may send back to back within its rate (1 = evenly spaced).",
    "rate_limit_max_inflight": "Turns one tenant may run at once, fleet-wide (JWT and --auth "
    "none callers); 0 = no limit.",
    "rate_limiter": "Where limits are counted: memory:// or redis://... (fleet-wide). "
    "Default: the store's Redis, else memory://.",
    "admin_token": "Token for /admin routes and, with --metrics-require-admin, /metrics "
    "(Authorization: Bearer). Unset: off.",
    "lease_ttl": "Seconds a session lease lives without renewal; a turn whose process died "
    "can be retried after it.",
    "enqueue_timeout": "Longest wait, in seconds, for a busy session under on_busy=enqueue "
    "before 409 session_busy.",
    "turn_timeout": "Longest an agent may run for one turn, in seconds; then the turn fails.",
    "max_inflight_turns": "Turns one process runs at once; past it 503 + Retry-After "
    "(0 = no limit).",
    "detailed_errors": "Show a failed agent's exception to clients (development); off: a "
    "stable message with the turn id, the exception in the log.",
    "drain_timeout": "On SIGTERM or POST /admin/drain: seconds in-flight turns may finish "
    "before they are cancelled (and kept for a retry).",
    "broker": "Stream broker: memory:// (this process) or redis://... (resumable anywhere). "
    "Default: the store's Redis, else memory://.",
    "stream_ttl": "Seconds a turn's stream stays readable after the turn ends.",
    "chunk_coalesce_ms": "Chunks arriving within this many milliseconds leave as one event.",
    "sse_heartbeat_s": "Seconds an SSE stream may go without an event (a thinking model) "
    "before a `: ping` line keeps proxies and clients from closing it.",
    "ws_send_buffer": "Frames queued for one WebSocket client; past it the client is too "
    "slow and is closed with 4001.",
    "ws_send_buffer_bytes": "Bytes waiting for one WebSocket client (queue and socket buffer); "
    "past it: close 4001, aborted --ws-slow-consumer-grace later if still open.",
    "socket_send_buffer": "Kernel send buffer (SO_SNDBUF) per connection, bytes: what a client "
    "that does not read holds in the kernel. 0: autotuned (to 4 MB).",
    "ws_slow_consumer_grace": "Seconds a WebSocket client closed with 4001 has to read to the "
    "close; then the connection is aborted.",
    "ws_idle_timeout": "Seconds a WebSocket may stay silent with no turn running; then 1000.",
    "header_timeout": "Seconds a client has to send a request's headers; then 408 and the "
    "connection is closed (slowloris).",
    "body_timeout": "Seconds a client has, after the headers, to send the whole body; then "
    "408 and the connection is closed.",
    "keep_alive_timeout": "Seconds an idle keep-alive connection is kept between requests.",
    "max_connections": "Open connections per process; past it new ones may only ask the "
    "probes and /metrics (others 503). Lowered to fit the file limit.",
    "log_level": "Log level: debug, info, warning, error.",
    "log_format": "json (one object per line), console (for people) or auto (console when "
    "stderr is a terminal).",
    "log_content": "Log each turn's message and answer at debug level (off: content never "
    "reaches a log; keys are redacted).",
    "access_log": "One log line per HTTP request (method, path, status, duration, ids).",
    "otel": "OpenTelemetry traces: none, console, or otlp (OTEL_EXPORTER_OTLP_*; needs the "
    "otel extra).",
    "openai_model": "Model id the /openai/v1 endpoints list and answer as: the hosted agent.",
    "openai_task_model": "Model id of /openai/v1 whose chat requests (a UI's title and tag "
    "prompts) go to the LLM directly, outside any session.",
    "cors_origins": "Browser origins allowed to call the API, comma-separated (e.g. "
    "https://app.example.com). Empty: no CORS headers.",
    "playground": "Serve /playground: on, off, or auto (on with the embedded sqlite:// or "
    "memory:// store, off with a shared one).",
    "heartbeat_interval": "Seconds between this process's records in the fleet's process "
    "registry (what /dashboard shows).",
    "grafana_url": "The Grafana dashboard /dashboard links to for long history (import "
    "docs/grafana/agenthost-dashboard.json).",
    "role": "all (take and run turns), api (take turns, queue them for workers) or worker "
    "(run queued turns); api and worker need a shared store.",
    "worker_concurrency": "Queued turns one worker process runs at once.",
    "max_queued_turns": "Turns one tenant may have queued or running in the background; past "
    "it 429 queue_full (0 = no limit).",
    "tenant_classes": "Label the queue's oldest-age gauge by class: 'gold=acme,globex;"
    "free=-' ('-': no auth; the rest: other).",
    "callback_secret": "Key of the HMAC-SHA256 signature of a background turn's callback POST "
    "(X-Agenthost-Signature). Unset: callbacks unsigned.",
    "callback_allow_private": "Let callback_url (and its redirects) reach loopback, private "
    "and link-local addresses (development).",
    "server_protocols": "auto (agenthost's lean HTTP/WebSocket protocols where this uvicorn "
    "allows, else uvicorn's) or stock (uvicorn's).",
}
