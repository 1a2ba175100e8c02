"""Objects that point at each other point at something real: Services and budgets select
the server's pods, the Ingress routes to a Service port and to paths the server has, the
autoscaler targets the Deployment on a metric the server exports, and Prometheus scrapes a
Service port at a path the server answers."""

from __future__ import annotations

import re
from typing import Any

from agenthost.k8s.facts import ServerFacts
from agenthost.k8s.objects import (
    containers,
    find,
    labels_match,
    name_of,
    pod_templates,
    template_labels,
)
from agenthost.k8s.problems import Problem, describe

__all__ = ["QUEUE_TABLES", "check_references", "metric_names_in_query", "tables_in_query"]

Obj = dict[str, Any]


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _selected_templates(objects: list[Obj], selector: dict[str, Any]) -> list[Obj]:
    return [t for _, t in pod_templates(objects) if labels_match(selector, template_labels(t))]


def _check_services(objects: list[Obj]) -> list[Problem]:
    problems: list[Problem] = []
    for service in find(objects, "Service"):
        spec = _d(service.get("spec"))
        templates = _selected_templates(objects, _d(spec.get("selector")))
        if not templates:
            problems.append(Problem(describe(service), "its selector matches no pod template"))
            continue
        port_names = {
            p.get("name") for t in templates for c in containers(t) for p in _l(c.get("ports"))
        }
        for port in _l(spec.get("ports")):
            target = _d(port).get("targetPort")
            if isinstance(target, str) and target not in port_names:
                problems.append(
                    Problem(describe(service), f"targetPort {target!r} is no container port")
                )
    return problems


def _check_ingresses(objects: list[Obj], facts: ServerFacts) -> list[Problem]:
    problems: list[Problem] = []
    routes = [re.sub(r"\{[^}]+\}", "x", p) for p in facts.route_paths]
    for ingress in find(objects, "Ingress"):
        for rule in _l(_d(ingress.get("spec")).get("rules")):
            for path in _l(_d(_d(rule).get("http")).get("paths")):
                path = _d(path)
                problems += [Problem(describe(ingress), m) for m in _backend(objects, path)]
                value, kind = str(path.get("path", "/")), path.get("pathType")
                if kind == "Exact":
                    found = value in facts.route_paths
                else:
                    found = any(r == value.rstrip("/") or r.startswith(value) for r in routes)
                if not found:
                    problems.append(
                        Problem(describe(ingress), f"path {value} ({kind}) reaches no route")
                    )
    return problems


def _backend(objects: list[Obj], path: Obj) -> list[str]:
    service_ref = _d(_d(path.get("backend")).get("service"))
    if not service_ref:
        return []
    name = str(service_ref.get("name", ""))
    services = find(objects, "Service", name)
    if not services:
        return [f"backend Service {name} is not in the overlay"]
    port = _d(service_ref.get("port"))
    ports = _l(_d(services[0].get("spec")).get("ports"))
    if "name" in port and port["name"] not in {_d(p).get("name") for p in ports}:
        return [f"backend port name {port['name']!r} is not a port of Service {name}"]
    if "number" in port and port["number"] not in {_d(p).get("port") for p in ports}:
        return [f"backend port {port['number']} is not a port of Service {name}"]
    return []


def _check_target(objects: list[Obj], owner: Obj, ref: dict[str, Any]) -> list[Problem]:
    kind, name = str(ref.get("kind", "Deployment")), str(ref.get("name", ""))
    if find(objects, kind, name):
        return []
    return [Problem(describe(owner), f"scaleTargetRef {kind}/{name} is not in the overlay")]


def metric_names_in_query(query: str) -> set[str]:
    """The agenthost_* series a PromQL query reads."""
    return set(re.findall(r"\bagenthost_[a-zA-Z0-9_]+", query))


def _check_autoscalers(objects: list[Obj], facts: ServerFacts) -> list[Problem]:
    problems: list[Problem] = []
    for hpa in find(objects, "HorizontalPodAutoscaler"):
        spec = _d(hpa.get("spec"))
        problems += _check_target(objects, hpa, _d(spec.get("scaleTargetRef")))
        for metric in _l(spec.get("metrics")):
            metric = _d(metric)
            source_key = {"Pods": "pods", "Object": "object"}.get(str(metric.get("type")), "")
            source = _d(metric.get(source_key))
            name = _d(source.get("metric")).get("name")
            if name is not None and name not in facts.metric_names:
                problems.append(
                    Problem(describe(hpa), f"metric {name} is not exported on GET /metrics")
                )
    for scaled in find(objects, "ScaledObject"):
        spec = _d(scaled.get("spec"))
        problems += _check_target(objects, scaled, _d(spec.get("scaleTargetRef")))
        for trigger in _l(spec.get("triggers")):
            trigger = _d(trigger)
            query = str(_d(trigger.get("metadata")).get("query", ""))
            if trigger.get("type") == "prometheus":
                for name in sorted(metric_names_in_query(query) - facts.metric_names):
                    problems.append(
                        Problem(describe(scaled), f"query reads {name}, not exported on /metrics")
                    )
            elif trigger.get("type") == "postgresql":
                for table in sorted(tables_in_query(query) - QUEUE_TABLES):
                    problems.append(
                        Problem(describe(scaled), f"query reads {table}, not a queue table")
                    )
            problems += _check_authentication(objects, scaled, _d(trigger.get("authenticationRef")))
    return problems


QUEUE_TABLES = frozenset({"agenthost_turn_queue", "agenthost_queue_tenants"})
"""The PostgreSQL work queue's tables (stores/migrations/0007_turn_queue.sql)."""


def tables_in_query(query: str) -> set[str]:
    """The agenthost_* tables a SQL query reads."""
    return set(re.findall(r"\bagenthost_[a-z0-9_]+", query))


def _check_authentication(objects: list[Obj], owner: Obj, ref: dict[str, Any]) -> list[Problem]:
    """A trigger's authenticationRef names a TriggerAuthentication of the overlay (a
    ClusterTriggerAuthentication lives outside it)."""
    name = ref.get("name")
    if name is None or ref.get("kind", "TriggerAuthentication") != "TriggerAuthentication":
        return []
    if any(name_of(o) == name for o in find(objects, "TriggerAuthentication")):
        return []
    return [Problem(describe(owner), f"authenticationRef {name} is not in the overlay")]


def _check_budgets(objects: list[Obj]) -> list[Problem]:
    return [
        Problem(describe(pdb), "its selector matches no pod template")
        for pdb in find(objects, "PodDisruptionBudget")
        if not _selected_templates(objects, _d(_d(pdb.get("spec")).get("selector")))
    ]


def _check_monitors(objects: list[Obj], facts: ServerFacts) -> list[Problem]:
    problems: list[Problem] = []
    for monitor in find(objects, "ServiceMonitor"):
        spec = _d(monitor.get("spec"))
        services = [
            s
            for s in find(objects, "Service")
            if labels_match(_d(spec.get("selector")), _d(_d(s.get("metadata")).get("labels")))
        ]
        if not services:
            problems.append(Problem(describe(monitor), "its selector matches no Service"))
            continue
        port_names = {
            _d(p).get("name") for s in services for p in _l(_d(s.get("spec")).get("ports"))
        }
        for endpoint in _l(spec.get("endpoints")):
            endpoint = _d(endpoint)
            if "port" in endpoint and endpoint["port"] not in port_names:
                problems.append(
                    Problem(
                        describe(monitor),
                        f"endpoint port {endpoint['port']!r} is not a port of Service "
                        + ", ".join(name_of(s) for s in services),
                    )
                )
            path = str(endpoint.get("path", "/metrics"))
            if path != "/metrics":
                problems.append(
                    Problem(describe(monitor), f"endpoint path {path}: metrics are at /metrics")
                )
    return problems


def check_references(objects: list[Obj], facts: ServerFacts) -> list[Problem]:
    """Every reference between the overlay's objects, and to the server's routes/metrics."""
    return (
        _check_services(objects)
        + _check_ingresses(objects, facts)
        + _check_autoscalers(objects, facts)
        + _check_budgets(objects)
        + _check_monitors(objects, facts)
    )
