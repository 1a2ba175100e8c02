"""Process metrics in the Prometheus text format, kept without a client library.

Counting costs a dict update or a bisect into fixed buckets, and nothing is locked: every
count happens on the event loop thread. Label values are few and known (outcomes, reasons,
operation names, error codes): never a session, turn or tenant id. The names are the ones an
autoscaler reads (`agenthost_active_connections`, `agenthost_inflight_turns`) and the ones
docs/observability.md and docs/grafana/agenthost-dashboard.json use.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable

from agenthost.observability.activity import Activity

__all__ = [
    "CONNECTION_REFUSALS",
    "DURATION_BUCKETS",
    "FAST_BUCKETS",
    "LLM_BUCKETS",
    "METRIC_NAMES",
    "REJECTION_REASONS",
    "Histogram",
    "Metrics",
    "rejection_reason",
]

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Turn duration buckets, in seconds."""

LLM_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
"""LLM request and time-to-first-token buckets, in seconds."""

FAST_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
"""Store and broker operation buckets, in seconds: most steps take well under a millisecond."""

FLUSH_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.05, 0.06, 0.07,
    0.08, 0.09, 0.1, 0.125, 0.15, 0.2, 0.3, 0.5, 1.0,
)  # fmt: skip
"""Chunk flusher buckets, in seconds: fine around a coalescing window of tens of ms, where a
stream's gap between chunks is decided."""

CONNECTION_REFUSALS = ("over_capacity", "headers_timeout", "body_timeout")
"""Why a connection was refused or closed early (agenthost_connections_refused_total)."""

REJECTION_REASONS = (
    "draining",
    "overloaded",
    "session_busy",
    "rate_limited",
    "concurrency_limited",
    "unauthorized",
    "not_found",
    "payload_too_large",
    "invalid",
)
"""Every `reason` label of agenthost_rejections_total (all exported from the start, at 0)."""

# Error codes whose reason is the code itself; others are classified by HTTP status.
_REASON_BY_CODE = {r: r for r in ("draining", "overloaded", "session_busy", "rate_limited",
                                  "concurrency_limited")}  # fmt: skip
_REASON_BY_STATUS = {
    400: "invalid",
    401: "unauthorized",
    403: "unauthorized",
    404: "not_found",
    413: "payload_too_large",
    415: "invalid",
    422: "invalid",
    429: "rate_limited",
}

METRIC_NAMES = (
    "agenthost_active_connections",
    "agenthost_inflight_turns",
    "agenthost_draining",
    "agenthost_turns_total",
    "agenthost_turn_duration_seconds",
    "agenthost_llm_request_duration_seconds",
    "agenthost_llm_time_to_first_token_seconds",
    "agenthost_llm_errors_total",
    "agenthost_llm_cache_requests_total",
    "agenthost_session_cache_requests_total",
    "agenthost_store_operation_duration_seconds",
    "agenthost_broker_operation_duration_seconds",
    "agenthost_rejections_total",
    "agenthost_rate_limited_total",
    "agenthost_protocol_requests_total",
    "agenthost_connections_refused_total",
    "agenthost_queue_depth",
    "agenthost_queue_oldest_age_seconds",
    "agenthost_worker_busy",
    "agenthost_event_loop_lag_seconds",
    "agenthost_gc_pause_seconds",
    "agenthost_chunk_flush_seconds",
    "agenthost_chunk_flush_streams_total",
    "agenthost_chunk_window_seconds",
    "agenthost_process_cpu_seconds_total",
)
"""Every metric family `Metrics.render` exports (histograms add _bucket, _sum, _count)."""


def rejection_reason(status: int, code: str) -> str | None:
    """The rejection reason of an error answer, or None when it is not a refusal (an agent
    failure, a store outage, a conflict such as `session_exists`)."""
    return _REASON_BY_CODE.get(code) or _REASON_BY_STATUS.get(status)


class Histogram:
    """Cumulative-on-render counts of observations in fixed buckets (upper bounds, seconds)."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is above every bound
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # bisect_left puts a value equal to a bound into that bound's bucket (le = "<=").
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def observe_for(self, value: float, calls: int) -> None:
        """Count `value` for `calls` observations: one timed call standing for the untimed
        ones before it (a sampled histogram)."""
        self.counts[bisect.bisect_left(self.bounds, value)] += calls
        self.sum += value * calls
        self.count += calls

    def render(self, out: list[str], name: str, labels: str = "") -> None:
        """Append the _bucket, _sum and _count lines; `labels` like `operation="x",`."""
        cumulative = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            cumulative += count
            out.append(f'{name}_bucket{{{labels}le="{bound:g}"}} {cumulative}')
        out.append(f'{name}_bucket{{{labels}le="+Inf"}} {self.count}')
        suffix = "{" + labels.rstrip(",") + "}" if labels else ""
        out.append(f"{name}_sum{suffix} {self.sum:.6f}")
        out.append(f"{name}_count{suffix} {self.count}")


class Metrics:
    """The counters, gauges and histograms of one server process."""

    def __init__(
        self,
        *,
        llm_cache: Callable[[], tuple[int, int]] = lambda: (0, 0),
        session_cache: Callable[[], dict[str, int]] | None = None,
        activity: Activity | None = None,
    ) -> None:
        self.turns: dict[str, int] = {}
        self.turn_duration = Histogram(DURATION_BUCKETS)
        self.llm_duration = Histogram(LLM_BUCKETS)
        self.llm_first_token = Histogram(LLM_BUCKETS)
        self.llm_errors: dict[str, int] = {}
        self.store_ops: dict[str, Histogram] = {}
        self.broker_ops: dict[str, Histogram] = {}
        self.rejections = dict.fromkeys(REJECTION_REASONS, 0)
        self.rate_limits: dict[str, int] = {"default": 0}
        self.protocol_requests: dict[str, int] = {}
        self.connections_refused = dict.fromkeys(CONNECTION_REFUSALS, 0)
        self.open_streams = 0
        self.open_websockets = 0
        self.inflight: Callable[[], int] = lambda: 0
        self.draining: Callable[[], bool] = lambda: False
        self.llm_cache = llm_cache
        """(hits, misses) of the LLM response cache; (0, 0) without one."""
        self.session_cache = session_cache or (
            lambda: {"hit": 0, "miss": 0, "bypass": 0, "local": 0}
        )
        """Turn begins by how the session cache (`--cache`) served them; zeros without one."""
        self.activity = activity or Activity()
        """Recent turns and refusals by tenant, for the dashboard (never exported here)."""
        self.queue_depth = 0
        self.queue_oldest_age_by_class: dict[str, float] = {}
        """With --tenant-classes: each class's oldest queued turn's age (sampled)."""
        self.queue_oldest_age_s = 0.0
        """The work queue's turns queued or running and the oldest's age, fleet-wide, as an
        `api` or `worker` process last sampled them (0 without a queue)."""
        self.worker_busy: Callable[[], int] = lambda: 0
        self.loop_lag = Histogram(FAST_BUCKETS)
        """How much later than asked the event loop ran a timer (observability.loop_health)."""
        self.gc_pauses = {str(generation): Histogram(FAST_BUCKETS) for generation in range(3)}
        """Garbage collections by generation, and how long each stopped the process."""
        self.chunk_flushes = Histogram(FLUSH_BUCKETS)
        """Passes of the chunk flusher (`turns.chunks`), and how long each held the loop."""
        self.chunk_flush_streams = 0
        """Streams those passes published a chunk of."""
        self.chunk_windows = Histogram(FLUSH_BUCKETS)
        """Each window's text that opened it: how long it waited to be written out."""

    def chunk_flush(self, seconds: float, streams: int, window: float) -> None:
        """One pass of the chunk flusher: it published `streams` streams' text, `window`
        seconds after the window's first text arrived."""
        self.chunk_flushes.observe(seconds)
        self.chunk_flush_streams += streams
        self.chunk_windows.observe(window)

    def watch_engine(self, inflight: Callable[[], int], draining: Callable[[], bool]) -> None:
        """Read the turn engine's in-flight count and drain state when rendering (the engine
        is built with these metrics, so it registers itself)."""
        self.inflight = inflight
        self.draining = draining

    # -- counting (called by the engine, the web layer and the instrumented wrappers) ----------

    def turn_finished(self, outcome: str, seconds: float) -> None:
        """Count a turn by outcome (completed, replayed, failed, interrupted, rejected, ...)."""
        self.turns[outcome] = self.turns.get(outcome, 0) + 1
        self.turn_duration.observe(seconds)

    def rejected(self, reason: str) -> None:
        """Count a request refused for `reason` (one of REJECTION_REASONS; others are
        counted too, under their own label, so a new reason is never lost)."""
        self.rejections[reason] = self.rejections.get(reason, 0) + 1

    def error_answered(self, status: int, code: str) -> None:
        """Count an error answer as a rejection if it is one (see `rejection_reason`)."""
        reason = rejection_reason(status, code)
        if reason is not None:
            self.rejected(reason)

    def rate_limited(self, tenant_class: str = "default") -> None:
        """Count a request the rate limiter refused; `tenant_class` is a plan or tier name,
        never a tenant id (one series per class)."""
        self.rate_limits[tenant_class] = self.rate_limits.get(tenant_class, 0) + 1

    def protocol_request(self, protocol: str) -> None:
        """Count a turn request by the client protocol it came in (native, openai_chat, ...)."""
        self.protocol_requests[protocol] = self.protocol_requests.get(protocol, 0) + 1

    def connection_refused(self, reason: str) -> None:
        """Count a connection the server closed or refused for `reason` (one of
        CONNECTION_REFUSALS): past --max-connections, or past a request's deadline."""
        self.connections_refused[reason] = self.connections_refused.get(reason, 0) + 1

    def llm_failed(self, code: str) -> None:
        """Count an LLM call that raised, by its `LLMError.code`."""
        self.llm_errors[code] = self.llm_errors.get(code, 0) + 1

    def store_histogram(self, operation: str) -> Histogram:
        """The histogram of one store operation (created on first use, then kept)."""
        return self.store_ops.setdefault(operation, Histogram(FAST_BUCKETS))

    def broker_histogram(self, operation: str) -> Histogram:
        """The histogram of one broker operation (created on first use, then kept)."""
        return self.broker_ops.setdefault(operation, Histogram(FAST_BUCKETS))

    @property
    def active_connections(self) -> int:
        return self.open_streams + self.open_websockets

    # -- exposition ------------------------------------------------------------------------

    def render(self) -> bytes:
        """The exposition text."""
        out: list[str] = []
        _gauge(
            out,
            "agenthost_active_connections",
            "Open WebSocket connections and event streams.",
            self.active_connections,
        )
        _gauge(
            out, "agenthost_inflight_turns", "Turns admitted and not yet finished.", self.inflight()
        )
        _gauge(out, "agenthost_draining", "1 while this process drains.", int(self.draining()))
        _counter(
            out,
            "agenthost_turns_total",
            "Turns finished, by outcome.",
            "outcome",
            self.turns.items(),
        )
        _histogram_head(out, "agenthost_turn_duration_seconds", "Time from admission to answer.")
        self.turn_duration.render(out, "agenthost_turn_duration_seconds")
        _histogram_head(
            out,
            "agenthost_llm_request_duration_seconds",
            "LLM calls made by agents, start to last token (cache hits included).",
        )
        self.llm_duration.render(out, "agenthost_llm_request_duration_seconds")
        _histogram_head(
            out,
            "agenthost_llm_time_to_first_token_seconds",
            "Streamed LLM calls, start to first text chunk.",
        )
        self.llm_first_token.render(out, "agenthost_llm_time_to_first_token_seconds")
        _counter(
            out,
            "agenthost_llm_errors_total",
            "LLM calls that failed after their retries, by error code.",
            "code",
            self.llm_errors.items(),
        )
        hits, misses = self.llm_cache()
        _counter(
            out,
            "agenthost_llm_cache_requests_total",
            "Cacheable LLM calls answered from the cache (hit) or upstream (miss).",
            "result",
            (("hit", hits), ("miss", misses)),
        )
        _counter(
            out,
            "agenthost_session_cache_requests_total",
            "Turn begins whose window came from the session cache (hit), from PostgreSQL "
            "(miss), or from PostgreSQL past a failing cache (bypass).",
            "result",
            self.session_cache().items(),
        )
        _histogram_head(
            out,
            "agenthost_store_operation_duration_seconds",
            "Session store operations, by operation.",
        )
        for op in sorted(self.store_ops):
            self.store_ops[op].render(
                out, "agenthost_store_operation_duration_seconds", f'operation="{op}",'
            )
        _histogram_head(
            out,
            "agenthost_broker_operation_duration_seconds",
            "Stream broker operations, by operation.",
        )
        for op in sorted(self.broker_ops):
            self.broker_ops[op].render(
                out, "agenthost_broker_operation_duration_seconds", f'operation="{op}",'
            )
        _counter(
            out,
            "agenthost_rejections_total",
            "Requests refused, by reason.",
            "reason",
            self.rejections.items(),
        )
        _counter(
            out,
            "agenthost_rate_limited_total",
            "Requests refused by the rate limiter, by tenant class.",
            "tenant_class",
            self.rate_limits.items(),
        )
        _counter(
            out,
            "agenthost_protocol_requests_total",
            "Turn requests, by the client protocol they came in.",
            "protocol",
            self.protocol_requests.items(),
        )
        _counter(
            out,
            "agenthost_connections_refused_total",
            "Connections refused past --max-connections or closed past a request deadline.",
            "reason",
            self.connections_refused.items(),
        )
        _gauge(
            out,
            "agenthost_queue_depth",
            "Turns on the work queue, queued or running, fleet-wide (sampled).",
            self.queue_depth,
        )
        out += [
            "# HELP agenthost_queue_oldest_age_seconds Age of the oldest turn on the work "
            "queue (sampled), per tenant class with --tenant-classes.",
            "# TYPE agenthost_queue_oldest_age_seconds gauge",
        ]
        if self.queue_oldest_age_by_class:
            out += [
                f'agenthost_queue_oldest_age_seconds{{tenant_class="{name}"}} {age:.3f}'
                for name, age in self.queue_oldest_age_by_class.items()
            ]
        else:
            out.append(f"agenthost_queue_oldest_age_seconds {self.queue_oldest_age_s:.3f}")
        _gauge(
            out,
            "agenthost_worker_busy",
            "Queued turns this worker process runs now.",
            self.worker_busy(),
        )
        _histogram_head(
            out,
            "agenthost_event_loop_lag_seconds",
            "How much later than asked the event loop ran a probe timer (every 0.1 s).",
        )
        self.loop_lag.render(out, "agenthost_event_loop_lag_seconds")
        _histogram_head(
            out,
            "agenthost_gc_pause_seconds",
            "Garbage collections, by generation, and how long each stopped the process.",
        )
        for generation, histogram in self.gc_pauses.items():
            histogram.render(out, "agenthost_gc_pause_seconds", f'generation="{generation}",')
        _histogram_head(
            out,
            "agenthost_chunk_flush_seconds",
            "Passes of the chunk flusher, and how long each held the event loop.",
        )
        self.chunk_flushes.render(out, "agenthost_chunk_flush_seconds")
        out += [
            "# HELP agenthost_chunk_flush_streams_total Streams the chunk flusher's passes "
            "published a chunk of.",
            "# TYPE agenthost_chunk_flush_streams_total counter",
            f"agenthost_chunk_flush_streams_total {self.chunk_flush_streams}",
        ]
        _histogram_head(
            out,
            "agenthost_chunk_window_seconds",
            "How long the text that opened each chunk window waited to be written out.",
        )
        self.chunk_windows.render(out, "agenthost_chunk_window_seconds")
        out += [
            "# HELP agenthost_process_cpu_seconds_total CPU time (user and system) this process "
            "has used.",
            "# TYPE agenthost_process_cpu_seconds_total counter",
            f"agenthost_process_cpu_seconds_total {time.process_time():.3f}",
        ]
        return ("\n".join(out) + "\n").encode()  # fmt: skip


def _gauge(out: list[str], name: str, text: str, value: int) -> None:
    out += [f"# HELP {name} {text}", f"# TYPE {name} gauge", f"{name} {value}"]


def _counter(
    out: list[str], name: str, text: str, label: str, values: Iterable[tuple[str, int]]
) -> None:
    out += [f"# HELP {name} {text}", f"# TYPE {name} counter"]
    for value, count in sorted(values):
        out.append(f'{name}{{{label}="{_escape(value)}"}} {count}')


def _histogram_head(out: list[str], name: str, text: str) -> None:
    out += [f"# HELP {name} {text}", f"# TYPE {name} histogram"]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
