"""OpenTelemetry traces, optional: `--otel console|otlp` (the `otel` extra), off by default.

Spans: the HTTP request (SERVER, continuing an incoming W3C `traceparent`), the turn
(`turn`: session_id, turn_id, tenant, outcome), each LLM call (`llm.chat`, CLIENT) and each
store and broker step (`store.begin_turn`, `broker.publish`, ...). Outgoing LLM requests carry
the LLM span's `traceparent`; HTTP responses carry the server span's as `traceresponse`
(W3C Trace Context Level 2), next to `x-request-id`.

OpenTelemetry is imported only when tracing is on, so the server runs without it. With
tracing off nothing here runs on a turn: callers hold `None` instead of a `Tracing` and check
that one attribute.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from agenthost.core.version import __version__

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["OTEL_MODES", "ActiveSpan", "Tracing", "create_tracing", "with_trace_headers"]

OTEL_MODES = ("none", "console", "otlp")

T = TypeVar("T")

# Set once a Tracing exists, so OpenAILLM can inject `traceparent` without importing
# OpenTelemetry when tracing is off.
_propagator: TraceContextTextMapPropagator | None = None

_OK_OUTCOMES = frozenset({"completed", "replayed"})


def create_tracing(mode: str, service_name: str = "agenthost") -> Tracing | None:
    """The tracing for `--otel MODE`: None for `none`; spans printed to stdout for `console`;
    sent by OTLP for `otlp` (endpoint and headers from the standard `OTEL_EXPORTER_OTLP_*`
    variables). ValueError, saying what to install, when a needed package is missing."""
    if mode == "none":
        return None
    if mode not in OTEL_MODES:
        raise ValueError(f"--otel must be one of {', '.join(OTEL_MODES)}, not {mode!r}")
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
    except ImportError:
        raise ValueError(
            f"--otel {mode} needs OpenTelemetry: pip install 'agenthost[otel]'"
        ) from None
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    if mode == "console":
        # One span, one write: a development aid, not a production exporter.
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    else:
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
    # Global, so spans an agent makes itself join the turn's trace.
    trace.set_tracer_provider(provider)
    return Tracing(provider)


def _otlp_exporter() -> Any:
    # Imported by name: the exporter packages are optional even with the otel extra.
    for module in (
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    ):
        try:
            exporter_class = importlib.import_module(module).OTLPSpanExporter
        except ImportError:
            continue
        return exporter_class()
    raise ValueError(
        "--otel otlp needs an OTLP exporter: pip install opentelemetry-exporter-otlp-proto-http "
        "(or opentelemetry-exporter-otlp-proto-grpc)"
    )


def with_trace_headers(options: dict[str, Any]) -> dict[str, Any]:
    """`options` of an LLM call plus `extra_headers` carrying the current span's
    `traceparent` (and `tracestate`); `options` itself when tracing is off."""
    if _propagator is None:
        return options
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    if not carrier:
        return options
    return {**options, "extra_headers": {**(options.get("extra_headers") or {}), **carrier}}


def _mark_failed(span: Span, exc: BaseException) -> None:
    if isinstance(exc, asyncio.CancelledError):
        span.set_attribute("agenthost.cancelled", True)
        return
    from opentelemetry.trace import StatusCode

    span.record_exception(exc)
    span.set_status(StatusCode.ERROR, type(exc).__name__)


class ActiveSpan:
    """A span that is the current one while attached (children and outgoing requests see
    it); `attach`/`detach` must pair up in one task."""

    __slots__ = ("_context", "_token", "span")

    def __init__(self, span: Span, context: Context) -> None:
        self.span = span
        self._context = context
        self._token: object | None = None

    def attach(self) -> None:
        from opentelemetry import context

        self._token = context.attach(self._context)

    def detach(self) -> None:
        from opentelemetry import context

        if self._token is not None:
            context.detach(self._token)  # type: ignore[arg-type]
            self._token = None

    def fail(self, exc: BaseException) -> None:
        """Mark the span failed by `exc` (a cancellation is not a failure)."""
        _mark_failed(self.span, exc)

    def end(self) -> None:
        self.detach()
        self.span.end()

    def end_turn(self, outcome: str) -> None:
        """End a turn's span with its outcome (an error status unless it completed)."""
        self.span.set_attribute("agenthost.outcome", outcome)
        if outcome not in _OK_OUTCOMES:
            from opentelemetry.trace import StatusCode

            self.span.set_status(StatusCode.ERROR, outcome)
        self.end()

    @property
    def traceparent(self) -> str:
        """This span as a W3C `traceparent` value."""
        ctx = self.span.get_span_context()
        return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


class Tracing:
    """Makes agenthost's spans with a tracer of `provider` (a test passes one with an
    in-memory exporter; `create_tracing` builds the configured one)."""

    def __init__(self, provider: TracerProvider) -> None:
        global _propagator
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import (
            TraceContextTextMapPropagator,
        )

        self.provider = provider
        self._tracer = provider.get_tracer("agenthost", __version__)
        self._propagator = TraceContextTextMapPropagator()
        self._kind = SpanKind
        _propagator = self._propagator

    def _start(
        self, name: str, kind: Any, attributes: dict[str, Any], parent: Context | None = None
    ) -> ActiveSpan:
        from opentelemetry.trace import set_span_in_context

        span = self._tracer.start_span(name, context=parent, kind=kind, attributes=attributes)
        return ActiveSpan(span, set_span_in_context(span, parent))

    def server_span(self, method: str, path: str, headers: dict[str, str]) -> ActiveSpan:
        """The span of one HTTP request, a child of the caller's `traceparent` if it sent
        one; attached. Its name becomes `METHOD /route/{template}` once the route is known."""
        parent = self._propagator.extract(headers) if "traceparent" in headers else None
        attributes = {"http.request.method": method, "url.path": path}
        active = self._start(method, self._kind.SERVER, attributes, parent)
        active.attach()
        return active

    def start_turn(self, session_id: str, turn_id: str, tenant: str | None) -> ActiveSpan:
        """The span of a turn, attached; end it with `ActiveSpan.end_turn`."""
        attributes = {"agenthost.session_id": session_id, "agenthost.turn_id": turn_id}
        if tenant is not None:
            attributes["agenthost.tenant"] = tenant
        active = self._start("turn", self._kind.INTERNAL, attributes)
        active.attach()
        return active

    def start_llm(self, model: str, stream: bool) -> ActiveSpan:
        """The span of one LLM call (not attached: the caller attaches it around each step
        that talks to the model, so the request carries its `traceparent`)."""
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "agenthost.llm.stream": stream,
        }
        return self._start("llm.chat", self._kind.CLIENT, attributes)

    async def traced(self, call: Coroutine[Any, Any, T], name: str) -> T:
        """Await `call` inside a leaf span `name` (a store or broker step)."""
        span = self._tracer.start_span(name, kind=self._kind.CLIENT)
        try:
            return await call
        except BaseException as exc:
            _mark_failed(span, exc)
            raise
        finally:
            span.end()

    def shutdown(self) -> None:
        """Flush and stop the exporters."""
        self.provider.shutdown()
