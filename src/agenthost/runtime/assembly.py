"""The composition root: every part of a server process built once, each with what it needs
passed in, and the ASGI app over them.

Building opens nothing: the app's lifespan opens the store, key store, limiter and broker and
starts the engine, and at shutdown drains (in-flight turns get their chance to commit) before
it closes them in the reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette

from agenthost.auth.authenticators import create_authenticator
from agenthost.brokers import create_broker
from agenthost.brokers.instrumented import InstrumentedBroker
from agenthost.core.errors import AgentHostError
from agenthost.core.input_limits import InputLimits
from agenthost.core.settings import (
    Settings,
    blame,
    broker_url,
    limiter_url,
    playground_on,
    store_ttl,
)
from agenthost.core.tenant_classes import TenantClasses
from agenthost.core.version import __version__
from agenthost.frameworks import FrameworkLLM
from agenthost.llm import create_llm
from agenthost.llm.base import LLMClient
from agenthost.llm.cache import cached_llm
from agenthost.llm.instrumented import InstrumentedLLM, cache_counts
from agenthost.observability.activity import Activity
from agenthost.observability.loop_health import LoopHealth
from agenthost.observability.metrics import Metrics
from agenthost.observability.tracing import Tracing, create_tracing
from agenthost.queue import WorkQueue, create_queue
from agenthost.queue.base import Delivery
from agenthost.ratelimit import create_limiter
from agenthost.ratelimit.gate import TurnGate
from agenthost.registry import ProcessRegistry, create_registry
from agenthost.runtime.heartbeat import Heartbeat
from agenthost.runtime.worker_slot import WorkerPeers, WorkerSlot
from agenthost.stores import SessionStore, create_store
from agenthost.stores.base import TurnRecord
from agenthost.stores.cached import CachedStore
from agenthost.stores.instrumented import InstrumentedStore
from agenthost.turns.agents import AgentRunner, load_agent
from agenthost.turns.callbacks import CallbackSender
from agenthost.turns.chunks import ChunkFlusher
from agenthost.turns.drain import Drain
from agenthost.turns.engine import TurnEngine
from agenthost.turns.service import TurnService
from agenthost.turns.window_cache import WindowCache
from agenthost.turns.worker import TurnWorker
from agenthost.web.adapters.ag_ui import AGUIRoutes
from agenthost.web.adapters.ai_sdk import AISDKRoutes
from agenthost.web.adapters.openai_chat import OpenAIChatRoutes
from agenthost.web.adapters.openai_responses import OpenAIResponsesRoutes
from agenthost.web.cors import parse_origins
from agenthost.web.dashboard_routes import DashboardRoutes
from agenthost.web.error_responses import error_handlers
from agenthost.web.pages import PageRoutes
from agenthost.web.process_routes import ProcessRoutes
from agenthost.web.routes import build_web_app, route_table
from agenthost.web.session_routes import SessionRoutes
from agenthost.web.turn_routes import TurnRoutes
from agenthost.web.websocket import OpenWebSockets, WebSocketOptions, WebSocketRoutes

__all__ = ["Assembly", "assemble", "build_app"]

log = logging.getLogger("agenthost")


@dataclass(frozen=True)
class Assembly:
    """A server process's parts: the app to serve, and what the process around it needs."""

    app: Starlette
    engine: TurnEngine
    drain: Drain
    metrics: Metrics
    heartbeat: Heartbeat


def assemble(
    settings: Settings,
    *,
    store: SessionStore | None = None,
    agent: AgentRunner | None = None,
    llm: LLMClient | None = None,
    tracing: Tracing | None = None,
    worker: WorkerSlot | None = None,
) -> Assembly:
    """Build every part for `settings`; `store`, `agent`, `llm` and `tracing` replace the
    configured ones (tests and embedding); `worker` places the process in a group started by
    `--workers` (its /metrics then covers the whole group). Raises SettingsError, naming the
    setting, for one that cannot work (a bad URL, an agent that cannot be imported or has the
    wrong shape)."""
    with blame("otel"):
        tracing = tracing or create_tracing(settings.otel)
    options: dict[str, Any] = {}
    if settings.store_read_replica:
        options["read_replicas"] = settings.store_read_replica
    if settings.cache:
        options.update(cache=settings.cache, cache_ttl=settings.cache_ttl)
    with blame("store"):
        the_store = store or create_store(settings.store, **options)
    with blame("llm"):
        the_llm = llm or create_llm(
            settings.llm,
            model=settings.llm_model,
            api_key=settings.llm_api_key,
            transport=settings.llm_transport,
        )
    if settings.llm_cache:
        with blame("llm_cache"):
            the_llm = cached_llm(
                the_llm,
                settings.llm_cache,
                ttl_s=settings.llm_cache_ttl,
                upstream=settings.llm,
                store_url=settings.store,
            )
    with blame("app"):
        framework_llm = FrameworkLLM(settings.llm, settings.llm_model, settings.llm_api_key)
        the_agent = agent or load_agent(settings.app, settings.app_dir, framework_llm)
    session_cache = the_store.counts if isinstance(the_store, CachedStore) else None
    metrics = Metrics(
        llm_cache=lambda: cache_counts(the_llm),
        session_cache=session_cache,
        activity=Activity(log_content=settings.log_content),
    )
    measured_llm = InstrumentedLLM(the_llm, metrics, tracing)
    loop_health = LoopHealth(metrics.loop_lag, metrics.gc_pauses)
    with blame("auth"):
        auth = create_authenticator(settings)
    # An in-flight slot of a process that died frees itself after the longest turn.
    with blame("rate_limiter"):
        limiter = create_limiter(
            limiter_url(settings), hold_s=settings.turn_timeout + settings.lease_ttl
        )
    with blame("broker"):
        broker = InstrumentedBroker(
            create_broker(broker_url(settings), stream_ttl=settings.stream_ttl), metrics, tracing
        )
    engine = TurnEngine(
        InstrumentedStore(the_store, metrics, tracing),
        the_agent,
        measured_llm,
        session_ttl=store_ttl(settings),
        history_window=settings.history_window,
        lease_ttl=settings.lease_ttl,
        enqueue_timeout=settings.enqueue_timeout,
        turn_timeout=settings.turn_timeout,
        max_inflight_turns=settings.max_inflight_turns,
        detailed_errors=settings.detailed_errors,
        metrics=metrics,
        tracing=tracing,
        window_cache=WindowCache(int(settings.window_cache_mb * 2**20)),
    )
    queue: WorkQueue | None = None
    if settings.role != "all":
        with blame("role"):
            # A turn whose worker stopped touching it is taken over once its lease could
            # have lapsed too.
            queue = create_queue(
                settings.store,
                claim_after=settings.lease_ttl,
                max_queued=settings.max_queued_turns,
            )
    chunk_flusher = ChunkFlusher(settings.chunk_coalesce_ms / 1000, metrics.chunk_flush)
    service = TurnService(
        engine,
        broker,
        TurnGate(limiter, metrics),
        chunk_flusher,
        # A turn sent to a worker's own port is queued as an api process would queue it.
        queue,
        max_background=settings.max_queued_turns,
    )
    callbacks = CallbackSender(
        secret=settings.callback_secret, allow_private=settings.callback_allow_private
    )

    async def queued_turn_ended(
        delivery: Delivery, record: TurnRecord | None, error: AgentHostError | None
    ) -> None:
        turn = delivery.turn
        if turn.callback_url is not None:
            callbacks.turn_ended(turn.callback_url, turn.session_id, turn.turn_id, record, error)

    turn_worker: TurnWorker | None = None
    if settings.role == "worker" and queue is not None:
        turn_worker = TurnWorker(
            engine,
            broker,
            queue,
            chunk_flusher,
            concurrency=settings.worker_concurrency,
            on_end=queued_turn_ended,
        )
        metrics.worker_busy = lambda: turn_worker.busy if turn_worker is not None else 0
    open_websockets = OpenWebSockets(metrics)
    registry: ProcessRegistry
    with blame("store"):
        registry = create_registry(settings.store, the_store)
    heartbeat = Heartbeat(
        registry,
        metrics,
        address=_address(settings),
        version=__version__,
        role=settings.role,
        interval=settings.heartbeat_interval,
    )
    drain = Drain(
        engine,
        settings.drain_timeout,
        on_start=(open_websockets.close_idle, heartbeat.beat_soon)
        + (() if turn_worker is None else (turn_worker.stop_taking,)),
        cancel=None if turn_worker is None else turn_worker.hand_back,
    )
    peers = WorkerPeers(worker, metrics, lambda: drain.start("supervisor gone")) if worker else None
    limits = InputLimits.from_settings(settings)
    cors_origins = parse_origins(settings.cors_origins)
    endpoints = route_table(
        SessionRoutes(
            service,
            auth,
            limits,
            session_ttl=store_ttl(settings),
            max_body_bytes=settings.max_body_bytes,
        ),
        TurnRoutes(
            service,
            auth,
            limits,
            max_body_bytes=settings.max_body_bytes,
            sse_heartbeat_s=settings.sse_heartbeat_s,
            callbacks=callbacks,
        ),
        ProcessRoutes(
            engine.store,
            drain,
            metrics,
            admin_token=settings.admin_token,
            metrics_require_admin=settings.metrics_require_admin,
            export=peers.export if peers else None,
        ),
        WebSocketRoutes(
            service, auth, limits, WebSocketOptions.from_settings(settings), open_websockets
        ),
        OpenAIChatRoutes(
            service,
            auth,
            limits,
            measured_llm,
            model=settings.openai_model,
            task_model=settings.openai_task_model,
            max_body_bytes=settings.max_body_bytes,
        ),
        AISDKRoutes(service, auth, limits, max_body_bytes=settings.max_body_bytes),
        AGUIRoutes(service, auth, limits, max_body_bytes=settings.max_body_bytes),
        OpenAIResponsesRoutes(
            service,
            auth,
            limits,
            model=settings.openai_model,
            max_body_bytes=settings.max_body_bytes,
        ),
        PageRoutes(playground=playground_on(settings)),
        DashboardRoutes(
            registry,
            admin_token=settings.admin_token,
            interval=settings.heartbeat_interval,
            grafana_url=settings.grafana_url,
            log_content=settings.log_content,
            process_id=heartbeat.process_id,
            draining=lambda: engine.draining,
        ),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await the_store.open()
        await auth.open()
        await limiter.open()
        await broker.open()
        await registry.open()
        if queue is not None:
            await queue.open()
        engine.start()
        heartbeat.start()
        loop_health.start()
        sampler = (
            None
            if queue is None
            else asyncio.create_task(
                _sample_queue(queue, metrics, TenantClasses(settings.tenant_classes))
            )
        )
        if turn_worker is not None:
            turn_worker.start()
        if peers is not None:
            await peers.open()
        try:
            yield
        finally:
            if peers is not None:
                await peers.close()
            # Whatever stops the server, in-flight turns get the drain's chance to commit.
            drain.start("shutdown")
            await drain.wait()
            if turn_worker is not None:
                await turn_worker.stop()
            if sampler is not None:
                sampler.cancel()
            await callbacks.close()
            await heartbeat.stop()
            await loop_health.stop()
            await registry.close()
            await engine.stop()
            if queue is not None:
                await queue.close()
            await broker.close()
            await limiter.close()
            await auth.close()
            await the_store.close()
            await the_llm.close()

    app = build_web_app(
        endpoints,
        handlers=error_handlers(metrics),
        lifespan=lifespan,
        tracing=tracing,
        title="agenthost",
        version=__version__,
        cors_origins=cors_origins,
    )
    return Assembly(app=app, engine=engine, drain=drain, metrics=metrics, heartbeat=heartbeat)


def _address(settings: Settings) -> str:
    """Where this process is reached: its host (this machine's name when it listens on every
    address) and port."""
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


async def _sample_queue(
    queue: WorkQueue, metrics: Metrics, classes: TenantClasses, period: float = 5.0
) -> None:
    """Keep the queue gauges of /metrics fresh (counting the queue costs a few commands)."""
    while True:
        try:
            stats = await queue.stats()
        except AgentHostError as exc:
            log.warning("could not sample the work queue: %s", exc)
        else:
            metrics.queue_depth = stats.depth
            metrics.queue_oldest_age_s = stats.oldest_age_s
            metrics.queue_oldest_age_by_class = classes.oldest_by_class(stats.oldest_age_by_tenant)
        await asyncio.sleep(period)


def build_app(
    settings: Settings,
    *,
    store: SessionStore | None = None,
    agent: AgentRunner | None = None,
    llm: LLMClient | None = None,
    tracing: Tracing | None = None,
) -> Starlette:
    """The ASGI app for `settings` (see `assemble`)."""
    return assemble(settings, store=store, agent=agent, llm=llm, tracing=tracing).app
