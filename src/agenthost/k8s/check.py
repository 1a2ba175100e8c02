"""`agenthost k8s check` without the command line: render each overlay, validate every
object, and check the manifests against the code. Problems are collected, never raised, so
one run reports all of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agenthost.k8s.adapter import check_adapter_rules, load_adapter_rules
from agenthost.k8s.consistency import check_server_workloads, check_setting_names
from agenthost.k8s.facts import ServerFacts, server_facts
from agenthost.k8s.problems import Problem
from agenthost.k8s.references import check_references
from agenthost.k8s.render import RenderError, list_overlays, render, resolve_overlay
from agenthost.k8s.validate import validate_objects

__all__ = ["OverlayReport", "check_overlay", "check_overlays", "default_adapter_values"]


@dataclass
class OverlayReport:
    name: str
    objects: int = 0
    problems: list[Problem] = field(default_factory=list)


def default_adapter_values(root: Path) -> Path | None:
    path = root / "prometheus-adapter" / "values.yaml"
    return path if path.is_file() else None


def check_overlay(
    root: Path,
    name: str,
    kubernetes_version: str,
    facts: ServerFacts,
    adapter_values: Path | None = None,
) -> OverlayReport:
    report = OverlayReport(name)
    try:
        objects = render(resolve_overlay(root, name))
    except RenderError as exc:
        report.problems.append(Problem("(render)", str(exc), name))
        return report
    report.objects = len(objects)
    problems = validate_objects(objects, kubernetes_version)
    problems += check_setting_names(objects, facts)
    problems += check_server_workloads(objects, facts)
    problems += check_references(objects, facts)
    if adapter_values is not None:
        try:
            rules = load_adapter_rules(adapter_values)
        except (OSError, ValueError) as exc:
            problems.append(Problem("(prometheus-adapter)", str(exc)))
        else:
            problems += check_adapter_rules(objects, rules, facts, str(adapter_values))
    report.problems = [Problem(p.subject, p.message, name) for p in problems]
    return report


def check_overlays(
    root: Path,
    names: list[str] | None,
    kubernetes_version: str,
    adapter_values: Path | None = None,
) -> list[OverlayReport]:
    """One report per overlay (all of `root/overlays` when `names` is empty)."""
    chosen = names or list_overlays(root)
    if not chosen:
        return [OverlayReport("(none)", 0, [Problem(str(root), "no overlays found")])]
    facts = server_facts()
    return [check_overlay(root, n, kubernetes_version, facts, adapter_values) for n in chosen]
