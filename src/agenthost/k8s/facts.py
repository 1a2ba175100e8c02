"""What the server really offers, read from its code, for the manifests to be checked
against: the settings (as `AGENTHOST_*` names), the GET routes a probe may use, the path
prefixes an Ingress may route, and the metric names `/metrics` exports."""

from __future__ import annotations

import re
from dataclasses import dataclass

from agenthost.core.settings import Settings, env_name

__all__ = ["ServerFacts", "server_facts"]


@dataclass(frozen=True)
class ServerFacts:
    setting_env_names: frozenset[str]
    get_paths: frozenset[str]  # GET routes without path parameters (probe candidates)
    route_paths: tuple[str, ...]  # every HTTP and WebSocket route, with {parameters}
    metric_names: frozenset[str]  # series names, histogram suffixes included


def server_facts() -> ServerFacts:
    from starlette.routing import Route, WebSocketRoute

    from agenthost.observability.metrics import Metrics
    from agenthost.runtime.assembly import build_app

    # Building the app opens nothing: its lifespan opens the store, broker and limiter.
    app = build_app(Settings(store="memory://"))
    get_paths: set[str] = set()
    route_paths: list[str] = []
    for route in app.routes:
        if isinstance(route, Route | WebSocketRoute):
            route_paths.append(route.path)
            methods = getattr(route, "methods", None) or set()
            if "GET" in methods and "{" not in route.path:
                get_paths.add(route.path)
    metric_names: set[str] = set()
    for match in re.finditer(r"^# TYPE (\S+) (\S+)$", Metrics().render().decode(), re.M):
        name, kind = match.groups()
        metric_names.add(name)
        if kind == "histogram":
            metric_names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
    return ServerFacts(
        setting_env_names=frozenset(env_name(f) for f in Settings.__struct_fields__),
        get_paths=frozenset(get_paths),
        route_paths=tuple(route_paths),
        metric_names=frozenset(metric_names),
    )
