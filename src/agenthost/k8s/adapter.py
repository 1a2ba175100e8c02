"""prometheus-adapter's rules, read from a Helm values file (`rules.custom`) or an adapter
config.yaml (`rules`): the HPA's Pods metrics must each be served by a rule, and every
rule must read a series the server exports."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from agenthost.k8s.facts import ServerFacts
from agenthost.k8s.objects import find
from agenthost.k8s.problems import Problem, describe

__all__ = ["check_adapter_rules", "load_adapter_rules", "served_metric"]


def load_adapter_rules(path: Path) -> list[dict[str, Any]]:
    """The custom-metrics rules of a values file or adapter config."""
    import yaml

    doc = yaml.safe_load(path.read_text()) or {}
    rules = doc.get("rules") if isinstance(doc, dict) else None
    if isinstance(rules, dict):
        rules = rules.get("custom")
    if not isinstance(rules, list):
        raise ValueError(f"{path}: no rules.custom (Helm values) or rules (adapter config) list")
    return [r for r in rules if isinstance(r, dict)]


def _series(rule: dict[str, Any]) -> str:
    match = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", str(rule.get("seriesQuery", "")))
    return match.group(1) if match else ""


def served_metric(rule: dict[str, Any]) -> str:
    """The custom metric name a rule serves: `name.as`, else the series' own name."""
    name = rule.get("name")
    if isinstance(name, dict) and name.get("as"):
        return str(name["as"])
    return _series(rule)


def check_adapter_rules(
    objects: list[dict[str, Any]], rules: list[dict[str, Any]], facts: ServerFacts, source: str
) -> list[Problem]:
    problems: list[Problem] = []
    for rule in rules:
        series = _series(rule)
        if series.startswith("agenthost_") and series not in facts.metric_names:
            problems.append(Problem(source, f"rule reads {series}, not exported on /metrics"))
    served = {served_metric(r) for r in rules}
    for hpa in find(objects, "HorizontalPodAutoscaler"):
        for metric in (hpa.get("spec") or {}).get("metrics") or []:
            if not isinstance(metric, dict) or metric.get("type") != "Pods":
                continue
            name = ((metric.get("pods") or {}).get("metric") or {}).get("name")
            if name and name not in served:
                problems.append(
                    Problem(describe(hpa), f"no prometheus-adapter rule in {source} serves {name}")
                )
    return problems
