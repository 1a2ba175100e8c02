"""The server workload against the code: every `AGENTHOST_*` variable is a setting and the
settings parse, probes hit real routes on the port the server listens on, and the
termination grace period leaves the drain its time.

A pod being deleted runs its preStop hook, then gets SIGTERM, and is killed at
`terminationGracePeriodSeconds` counted from the start: the hook's delay, the drain timeout
and the time cancelled turns get to release their leases must all fit before that.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

import msgspec

from agenthost.core.settings import ENV_PREFIX, Settings
from agenthost.k8s.facts import ServerFacts
from agenthost.k8s.objects import (
    container_env,
    containers,
    find,
    is_server_container,
    pod_templates,
    source_data,
)
from agenthost.k8s.prestop import DEFAULT_DELAY
from agenthost.k8s.problems import Problem, describe

__all__ = [
    "DRAIN_CANCEL_SECONDS",
    "check_server_workloads",
    "check_setting_names",
    "prestop_seconds",
]

# After the drain timeout the server cancels what still runs and waits up to this long for
# the cancelled turns to release their leases (agenthost.turns.drain.Drain._run).
DRAIN_CANCEL_SECONDS = 10.0
# Kubernetes' default when the pod spec does not say.
DEFAULT_GRACE_SECONDS = 30.0

Obj = dict[str, Any]


def _unknown_setting(name: str, facts: ServerFacts) -> str:
    close = difflib.get_close_matches(name, sorted(facts.setting_env_names), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{name} is not an agenthost setting{hint}; see `agenthost serve --help`"


def check_setting_names(objects: list[Obj], facts: ServerFacts) -> list[Problem]:
    """Every AGENTHOST_* key of a ConfigMap or Secret, and every AGENTHOST_* variable of a
    container, names a real setting."""
    problems: list[Problem] = []
    for obj in find(objects, "ConfigMap") + find(objects, "Secret"):
        for key in source_data(obj):
            if key.startswith(ENV_PREFIX) and key not in facts.setting_env_names:
                problems.append(Problem(describe(obj), _unknown_setting(key, facts)))
    for workload, template in pod_templates(objects):
        for container in containers(template):
            for entry in container.get("env") or []:
                name = str(entry.get("name", "")) if isinstance(entry, dict) else ""
                if name.startswith(ENV_PREFIX) and name not in facts.setting_env_names:
                    problems.append(
                        Problem(
                            describe(workload),
                            f"container {container.get('name')}: {_unknown_setting(name, facts)}",
                        )
                    )
    return problems


def prestop_seconds(container: Obj) -> float:
    """How long the preStop hook waits before the drain starts: `agenthost k8s prestop
    --delay N`, a `sleep N` command or the `sleep` action."""
    pre_stop = (container.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in pre_stop:
        return float((pre_stop["sleep"] or {}).get("seconds", 0))
    command = [str(w) for w in ((pre_stop.get("exec") or {}).get("command") or [])]
    if "prestop" in command:
        if "--delay" in command[:-1]:
            return float(command[command.index("--delay") + 1])
        for word in command:
            if word.startswith("--delay="):
                return float(word.split("=", 1)[1])
        return DEFAULT_DELAY
    match = re.search(r"\bsleep\s+([0-9.]+)", " ".join(command))
    return float(match.group(1)) if match else 0.0


def _settings_problem(env: dict[str, str]) -> tuple[Settings | None, str | None]:
    known = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    try:
        return Settings.from_env(known), None
    except (ValueError, msgspec.ValidationError) as exc:
        return None, f"its AGENTHOST_* settings do not parse: {exc}"


def _port_number(container: Obj, port: Any) -> int | None:
    if isinstance(port, int):
        return port
    for declared in container.get("ports") or []:
        if isinstance(declared, dict) and declared.get("name") == port:
            number = declared.get("containerPort")
            return number if isinstance(number, int) else None
    return None


def _check_listen(container: Obj, settings: Settings) -> list[str]:
    messages: list[str] = []
    name = container.get("name")
    ports = {p.get("containerPort") for p in container.get("ports") or [] if isinstance(p, dict)}
    if settings.port not in ports:
        messages.append(
            f"container {name}: the server listens on AGENTHOST_PORT={settings.port} but the "
            f"container declares ports {sorted(p for p in ports if isinstance(p, int))}"
        )
    if settings.host not in ("0.0.0.0", "::"):
        messages.append(
            f"container {name}: AGENTHOST_HOST={settings.host} is not reachable from the "
            "kubelet or the Service; use 0.0.0.0"
        )
    return messages


def _check_probes(container: Obj, settings: Settings | None, facts: ServerFacts) -> list[str]:
    """Probe paths are the right routes; with `settings`, probe ports the server's port."""
    messages: list[str] = []
    name = container.get("name")
    wanted = {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    for probe_name, path_wanted in wanted.items():
        probe = container.get(probe_name)
        if not isinstance(probe, dict):
            messages.append(f"container {name}: no {probe_name} (GET {path_wanted})")
            continue
        http_get = probe.get("httpGet")
        if not isinstance(http_get, dict):
            messages.append(f"container {name}: {probe_name} must be httpGet {path_wanted}")
            continue
        path = str(http_get.get("path", "/"))
        if path not in facts.get_paths:
            messages.append(
                f"container {name}: {probe_name} path {path} is not a GET route of the server "
                f"({', '.join(sorted(facts.get_paths))})"
            )
        elif path != path_wanted:
            why = (
                "only /readyz turns 503 while the pod drains or its store is unreachable"
                if probe_name == "readinessProbe"
                else "a liveness probe on readiness would restart pods that drain or wait "
                "for their store"
            )
            messages.append(f"container {name}: {probe_name} should GET {path_wanted}: {why}")
        number = _port_number(container, http_get.get("port"))
        if settings is not None and number != settings.port:
            messages.append(
                f"container {name}: {probe_name} port {http_get.get('port')!r} is not the "
                f"server's port {settings.port}"
            )
    return messages


def _check_grace(template: Obj, container: Obj, settings: Settings) -> list[str]:
    spec = template.get("spec") or {}
    grace = float(spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS))
    delay = prestop_seconds(container)
    needed = settings.drain_timeout + delay + DRAIN_CANCEL_SECONDS
    if grace > needed:
        return []
    return [
        f"terminationGracePeriodSeconds {grace:g} must exceed preStop delay {delay:g} s + "
        f"drain timeout {settings.drain_timeout:g} s + {DRAIN_CANCEL_SECONDS:g} s for "
        f"cancelled turns = {needed:g} s, or the kubelet kills turns still draining"
    ]


def check_server_workloads(objects: list[Obj], facts: ServerFacts) -> list[Problem]:
    """Settings, probes and drain timing of every agenthost server container."""
    problems: list[Problem] = []
    servers = 0
    for workload, template in pod_templates(objects):
        for container in containers(template):
            if not is_server_container(container):
                continue
            servers += 1
            env, missing = container_env(objects, container)
            if "AGENTHOST_STORE" not in env and any(m.startswith("Secret/") for m in missing):
                # The store URL is in a Secret made outside git: a shared store, as the
                # overlay's roles and auth expect; its value is not ours to check.
                env["AGENTHOST_STORE"] = "redis://store-from-the-secret:6379/0"
            settings, error = _settings_problem(env)
            messages = [f"container {container.get('name')}: {error}"] if error else []
            messages += _check_probes(container, settings, facts)
            if settings is not None:
                messages += _check_listen(container, settings)
                messages += _check_grace(template, container, settings)
            problems += [Problem(describe(workload), m) for m in messages]
    if servers == 0:
        problems.append(Problem("(overlay)", "no agenthost server container (args: [serve])"))
    return problems
