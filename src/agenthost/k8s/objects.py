"""Reading rendered manifests: find objects, the pod templates of workloads, the server
containers, and the environment a container gets from its ConfigMaps and Secrets."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from typing import Any

from agenthost.core.settings import ENV_PREFIX

__all__ = [
    "WORKLOAD_KINDS",
    "container_env",
    "containers",
    "find",
    "is_server_container",
    "labels_match",
    "name_of",
    "pod_templates",
    "source_data",
    "template_labels",
]

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet")

Obj = dict[str, Any]


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def name_of(obj: Obj) -> str:
    return str(_dict(obj.get("metadata")).get("name", ""))


def find(objects: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    """Objects of `kind` (and `name`, when given)."""
    return [o for o in objects if o.get("kind") == kind and (name is None or name_of(o) == name)]


def pod_templates(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(workload, its pod template spec) for every workload."""
    for obj in objects:
        if obj.get("kind") in WORKLOAD_KINDS:
            template = _dict(_dict(obj.get("spec")).get("template"))
            yield obj, template


def template_labels(template: Obj) -> dict[str, str]:
    return {str(k): str(v) for k, v in _dict(_dict(template.get("metadata")).get("labels")).items()}


def containers(template: Obj) -> list[Obj]:
    return [c for c in _list(_dict(template.get("spec")).get("containers")) if isinstance(c, dict)]


def labels_match(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether `labels` satisfy a Service-style map or a LabelSelector (matchLabels and
    matchExpressions). An empty selector matches nothing here: it is never what is meant."""
    if "matchLabels" in selector or "matchExpressions" in selector:
        required = _dict(selector.get("matchLabels"))
        expressions = _list(selector.get("matchExpressions"))
    else:
        required, expressions = selector, []
    if not required and not expressions:
        return False
    if any(labels.get(str(k)) != str(v) for k, v in required.items()):
        return False
    for expr in expressions:
        key, op = _dict(expr).get("key"), _dict(expr).get("operator")
        values = [str(v) for v in _list(_dict(expr).get("values"))]
        has = key in labels
        if (
            (op == "In" and labels.get(str(key)) not in values)
            or (op == "NotIn" and has and labels.get(str(key)) in values)
            or (op == "Exists" and not has)
            or (op == "DoesNotExist" and has)
        ):
            return False
    return True


def is_server_container(container: Obj) -> bool:
    """An `agenthost serve` container: it runs `serve` or is configured by AGENTHOST_* env."""
    words = [str(w) for w in _list(container.get("command")) + _list(container.get("args"))]
    if "serve" in words[:3]:
        return True
    return any(str(e.get("name", "")).startswith(ENV_PREFIX) for e in _env_entries(container))


def _env_entries(container: Obj) -> list[Obj]:
    return [e for e in _list(container.get("env")) if isinstance(e, dict)]


def source_data(obj: Obj) -> dict[str, str]:
    """A ConfigMap's or Secret's keys and values (Secret `data` base64-decoded)."""
    out = {str(k): str(v) for k, v in _dict(obj.get("data")).items()}
    if obj.get("kind") == "Secret":
        for key, value in list(out.items()):
            try:
                out[key] = base64.b64decode(value, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                out[key] = value
        out.update({str(k): str(v) for k, v in _dict(obj.get("stringData")).items()})
    return out


def container_env(objects: list[Obj], container: Obj) -> tuple[dict[str, str], list[str]]:
    """The variables the container gets with literal values (envFrom sources first, then
    `env`, as Kubernetes orders them) and the names of envFrom sources not in `objects`."""
    env: dict[str, str] = {}
    missing: list[str] = []
    for source in _list(container.get("envFrom")):
        source = _dict(source)
        prefix = str(source.get("prefix", ""))
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            ref = source.get(key)
            if not isinstance(ref, dict):
                continue
            found = find(objects, kind, str(ref.get("name", "")))
            if not found:
                missing.append(f"{kind}/{ref.get('name')}")
                continue
            env.update({prefix + k: v for k, v in source_data(found[0]).items()})
    for entry in _env_entries(container):
        if "value" in entry:
            env[str(entry.get("name"))] = str(entry["value"])
    return env, missing
