"""Server settings: one typed object, every field an `AGENTHOST_*` environment variable and an
`agenthost serve` flag of the same name (twelve-factor).

`Settings.from_env()` reads the environment; the CLI passes flags over it. Defaults are the
embedded deployment: SQLite file store, in-process simulated LLM, no external service.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec

from agenthost.connections.redis import is_redis_url

__all__ = [
    "ENV_PREFIX",
    "SETTINGS_HELP",
    "Settings",
    "broker_url",
    "env_name",
    "limiter_url",
    "shared_store",
]

ENV_PREFIX = "AGENTHOST_"


class Settings(msgspec.Struct, kw_only=True):
    """Everything `agenthost serve` can be told; see SETTINGS_HELP for each field."""

    app: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    store: str = "sqlite:///./agenthost.db"
    llm: str = "sim://"
    llm_model: str | None = None
    llm_api_key: str | None = None
    llm_transport: str = "aiohttp"
    llm_cache: str | None = None
    llm_cache_ttl: float = 300.0
    session_ttl: float = 3600.0
    history_window: int = 50
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
    ws_send_buffer: int = 256
    ws_send_buffer_bytes: int = 1024 * 1024
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

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.port < 65536:
            problems.append("port must be 1-65535")
        if self.session_ttl <= 0:
            problems.append("session_ttl must be > 0 seconds")
        if self.history_window < 0:
            problems.append("history_window must be >= 0")
        if self.max_body_bytes < 1024:
            problems.append("max_body_bytes must be >= 1024")
        if self.max_message_chars < 1:
            problems.append("max_message_chars must be >= 1")
        if self.max_metadata_bytes < 2:
            problems.append("max_metadata_bytes must be >= 2 (room for {})")
        if self.max_metadata_depth < 1:
            problems.append("max_metadata_depth must be >= 1")
        if self.ws_max_frame_bytes < 1024:
            problems.append("ws_max_frame_bytes must be >= 1024")
        if not self.ws_max_frames_per_s > 0:
            problems.append("ws_max_frames_per_s must be > 0")
        if self.lease_ttl < 0.2:
            problems.append("lease_ttl must be >= 0.2 seconds")
        if self.enqueue_timeout < 0:
            problems.append("enqueue_timeout must be >= 0")
        if self.turn_timeout <= 0:
            problems.append("turn_timeout must be > 0")
        if self.llm_transport not in ("aiohttp", "httpx"):
            problems.append("llm_transport must be aiohttp or httpx")
        if self.llm_cache_ttl <= 0:
            problems.append("llm_cache_ttl must be > 0 seconds")
        if self.llm_cache is not None:
            cache_scheme = self.llm_cache.split("://", 1)[0].lower()
            if cache_scheme == "redis" and "://" not in self.llm_cache:
                if not self.store.lower().startswith("redis"):
                    problems.append("llm_cache=redis (the store's Redis) needs a Redis store")
            elif cache_scheme != "memory" and not cache_scheme.startswith("redis"):
                problems.append("llm_cache must be memory://, redis://... or redis")
        if self.stream_ttl <= 0:
            problems.append("stream_ttl must be > 0")
        if self.chunk_coalesce_ms < 0:
            problems.append("chunk_coalesce_ms must be >= 0")
        if self.ws_send_buffer < 1:
            problems.append("ws_send_buffer must be >= 1")
        if self.ws_send_buffer_bytes < 64 * 1024:
            problems.append("ws_send_buffer_bytes must be >= 65536")
        if self.ws_idle_timeout <= 0:
            problems.append("ws_idle_timeout must be > 0")
        for name in ("header_timeout", "body_timeout", "keep_alive_timeout"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0 seconds")
        if self.max_connections < 1:
            problems.append("max_connections must be >= 1")
        if self.drain_timeout < 0:
            problems.append("drain_timeout must be >= 0")
        if self.max_inflight_turns < 0:
            problems.append("max_inflight_turns must be >= 0 (0 = no limit)")
        if self.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
            problems.append("log_level must be debug, info, warning, error or critical")
        if self.log_format not in ("auto", "json", "console"):
            problems.append("log_format must be auto, json or console")
        if self.otel not in ("none", "console", "otlp"):
            problems.append("otel must be none, console or otlp")
        if self.server_protocols not in ("auto", "stock"):
            problems.append("server_protocols must be auto or stock")
        problems += self._auth_problems()
        if problems:
            raise ValueError("invalid settings: " + "; ".join(problems))

    def _auth_problems(self) -> list[str]:
        problems = []
        if self.auth not in ("none", "keys", "jwt"):
            problems.append("auth must be none, keys or jwt")
        elif self.auth == "none" and shared_store(self.store) and not self.allow_no_auth:
            problems.append(
                "auth none is only for the embedded default (sqlite:// or memory:// store): "
                "use --auth keys or --auth jwt with a shared store, or --allow-no-auth for a "
                "private test fleet"
            )
        elif self.auth == "jwt" and not (self.jwt_secret or self.jwt_public_key):
            problems.append("auth jwt needs jwt_secret (HS256) or jwt_public_key (RS256)")
        if self.auth_cache_ttl < 0:
            problems.append("auth_cache_ttl must be >= 0")
        if self.rate_limit_turns_per_minute < 0 or self.rate_limit_max_inflight < 0:
            problems.append("rate limits must be >= 0 (0 = no limit)")
        if self.rate_limit_burst < 1:
            problems.append("rate_limit_burst must be >= 1")
        return problems

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from `AGENTHOST_*` variables, then `overrides` (None values ignored)."""
        env = os.environ if environ is None else environ
        raw: dict[str, Any] = {}
        for name in cls.__struct_fields__:
            value = env.get(env_name(name))
            if value is not None and value != "":
                raw[name] = value
        raw.update({k: v for k, v in overrides.items() if v is not None})
        # str_values=True parses "8000" as int and "1.5" as float, as env vars are text.
        return msgspec.convert(raw, cls, strict=False)


def broker_url(settings: Settings) -> str:
    """The broker to use: the configured one, else the store's Redis, else in-process."""
    if settings.broker:
        return settings.broker
    if is_redis_url(settings.store):
        return settings.store
    return "memory://"


def shared_store(store: str) -> bool:
    """Whether the store is shared by a fleet (Redis), not this process's own."""
    return is_redis_url(store)


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
    "app": "The agent, as module:attribute (e.g. mypkg.myagent:agent). "
    "Default: a built-in demo agent that answers through the configured LLM.",
    "host": "Address to listen on (0.0.0.0 in a container).",
    "port": "TCP port to listen on.",
    "store": "Session store URL: sqlite:///path.db (embedded default), memory://, "
    "redis://host:port/db, rediss://..., redis+cluster://host:port.",
    "llm": "LLM URL: sim:// (in-process simulator; sim://?latency_ms=2000&tokens_per_s=50 "
    "sets its speed) or an OpenAI-compatible base URL like https://host/v1.",
    "llm_model": "Model name sent to an OpenAI-compatible LLM.",
    "llm_api_key": "API key for an OpenAI-compatible LLM.",
    "llm_transport": "HTTP transport of the openai SDK for an OpenAI-compatible LLM: aiohttp "
    "(the SDK's DefaultAioHttpClient; measured cheaper, docs/benchmarks.md) or httpx (the "
    "SDK's default).",
    "llm_cache": "Cache of deterministic LLM answers (temperature 0), with one upstream call "
    "for identical requests in flight: memory:// (this process), redis://host:port/db "
    "(shared by the fleet) or redis (the store's Redis). Unset: off.",
    "llm_cache_ttl": "Seconds a cached LLM answer is served.",
    "session_ttl": "Seconds a session lives after its last turn (applies to all its data).",
    "history_window": "How many of the newest messages are handed to the agent each turn.",
    "max_body_bytes": "Largest request body accepted; larger gets 413.",
    "max_message_chars": "Longest message (in characters) a turn may carry; longer gets "
    "413 message_too_long (a WebSocket turn: an error frame).",
    "max_metadata_bytes": "Largest metadata object, encoded as JSON, a session or turn may "
    "carry; larger gets 413 metadata_too_large.",
    "max_metadata_depth": "Deepest nesting of objects and arrays in metadata (the metadata "
    "object itself is level 1); deeper gets 422 metadata_too_deep.",
    "ws_max_frame_bytes": "Largest WebSocket frame a client may send; a larger one closes the "
    "connection with 1009 (message too big).",
    "ws_max_frames_per_s": "Frames per second a WebSocket client may send (a token bucket "
    "holding one second's worth); faster closes the connection with 1008.",
    "metrics_require_admin": "Serve /metrics only with the admin token (Authorization: Bearer).",
    "auth": "Who may call: none (anyone; only with the embedded sqlite/memory store), keys (API "
    "keys from `agenthost keys create`, kept in the store) or jwt (bearer JWTs).",
    "allow_no_auth": "Allow --auth none with a shared (Redis) store: a private test fleet only.",
    "auth_cache_ttl": "Seconds an API key lookup is cached in each process; a revoked key stops "
    "working within this time.",
    "jwt_secret": "HS256 secret for --auth jwt.",
    "jwt_public_key": "RS256 public key (PEM, or @path to a PEM file) for --auth jwt.",
    "jwt_tenant_claim": "The JWT claim that names the tenant.",
    "jwt_audience": "Required JWT audience (aud), if set.",
    "jwt_issuer": "Required JWT issuer (iss), if set.",
    "rate_limit_turns_per_minute": "Turns per minute per tenant for JWT and --auth none "
    "callers (API keys carry their own); 0 = no limit. Past it: 429 + Retry-After.",
    "rate_limit_burst": "Turns a tenant may send back to back within its rate (1 = evenly "
    "spaced: any minute admits at most the rate).",
    "rate_limit_max_inflight": "Turns one tenant may run at once, fleet-wide, for JWT and "
    "--auth none callers; 0 = no limit.",
    "rate_limiter": "Where limits are counted: memory:// (this process) or redis://... "
    "(fleet-wide, atomic). Default: the store's Redis, else memory://.",
    "admin_token": "Token for /admin routes (Authorization: Bearer TOKEN). Unset: disabled.",
    "lease_ttl": "Seconds a session lease lives without renewal; a turn whose process died "
    "can be retried after this. Renewed every third of it while the agent runs.",
    "enqueue_timeout": "Longest wait, in seconds, for a busy session under on_busy=enqueue "
    "before answering 409 session_busy.",
    "turn_timeout": "Longest an agent may run for one turn, in seconds; then the turn fails.",
    "max_inflight_turns": "Turns one process runs at once; past it 503 + Retry-After "
    "(0 = no limit).",
    "detailed_errors": "Show a failed agent's exception (type and text) to the client, for "
    "development. Off: the client gets a stable message with the turn id; the exception "
    "goes to the log and the trace.",
    "drain_timeout": "On SIGTERM or POST /admin/drain: seconds to let in-flight turns finish "
    "before cancelling them (their user message is kept; a retry elsewhere completes them).",
    "broker": "Stream broker URL for streamed turns: memory:// (this process) or "
    "redis://... (resumable on any process). Default: the store's Redis, else memory://.",
    "stream_ttl": "Seconds a turn's stream stays readable after the turn ends.",
    "chunk_coalesce_ms": "Chunks arriving within this many milliseconds leave as one event.",
    "ws_send_buffer": "Frames queued for one WebSocket client; past it the client is too "
    "slow and is closed with 4001.",
    "ws_send_buffer_bytes": "Bytes waiting to go to one WebSocket client (queued frames and "
    "the socket's write buffer); past it the client is too slow: close 4001 at once, and the "
    "connection is aborted if it is still open 30 s later.",
    "ws_idle_timeout": "Seconds a WebSocket may stay silent with no turn running; then 1000.",
    "header_timeout": "Seconds a client has, from connecting (or from the first byte of a next "
    "request), to send a request's headers; then 408 and the connection is closed (slowloris).",
    "body_timeout": "Seconds a client has, after the headers, to send the whole body; then "
    "408 and the connection is closed.",
    "keep_alive_timeout": "Seconds an idle keep-alive connection is kept between requests.",
    "max_connections": "Open connections per process (HTTP and WebSocket); past it new ones "
    "may only ask /healthz, /readyz or /metrics (others get 503), and a few more are closed "
    "at once. Lowered to fit the file-descriptor limit, which start-up raises to its maximum.",
    "log_level": "Log level: debug, info, warning, error.",
    "log_format": "Log lines as json (one object per line) or console (for people); auto: "
    "console when stderr is a terminal, else json.",
    "log_content": "Also log message content (each turn's message and answer at debug "
    "level). Off: content never reaches a log line. Keys and tokens are redacted either way.",
    "access_log": "One log line per HTTP request at info level (method, path, status, "
    "duration, request_id, session_id, turn_id, tenant).",
    "otel": "OpenTelemetry traces: none, console (spans printed to stdout) or otlp (the "
    "OTEL_EXPORTER_OTLP_* variables say where; needs opentelemetry-exporter-otlp). Needs "
    "the otel extra (opentelemetry-api and opentelemetry-sdk).",
    "server_protocols": "uvicorn protocols to serve with: auto (agenthost's lean HTTP and "
    "WebSocket protocols where this uvicorn has what they use, else uvicorn's own with a "
    "warning) or stock (always uvicorn's own: more CPU per chunk, more memory per WebSocket).",
}
