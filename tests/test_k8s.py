"""deploy/kubernetes: every overlay renders with `kubectl kustomize` and every object is
valid; the manifests agree with a running server (probe routes, exported metrics) and with
the code (settings, drain timing); `agenthost k8s check` passes on the repo and names what
is wrong in a broken copy; `agenthost k8s prestop` drains a real server."""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from typer.testing import CliRunner

from agenthost.cli import app
from agenthost.core.settings import ENV_PREFIX, Settings, env_name
from agenthost.k8s.adapter import load_adapter_rules, served_metric
from agenthost.k8s.consistency import DRAIN_CANCEL_SECONDS, prestop_seconds
from agenthost.k8s.objects import container_env, find, is_server_container, pod_templates
from agenthost.k8s.references import metric_names_in_query
from agenthost.k8s.render import list_overlays, render
from agenthost.k8s.validate import DEFAULT_KUBERNETES_VERSION, validate_object
from agenthost.queue import QueuedTurn, create_queue
from tests.fixtures.agenthost import AGENTHOST, AgentHostProcess, http_status, wait_until

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "kubernetes"
OVERLAYS = list_overlays(K8S)
SETTING_ENV_NAMES = {env_name(field) for field in Settings.__struct_fields__}

Obj = dict[str, Any]


@functools.cache
def _rendered(overlay: str) -> str:
    return json.dumps(render(K8S / "overlays" / overlay))


def rendered(overlay: str) -> list[Obj]:
    """The overlay's objects, each test its own copy; `kubectl kustomize` runs once per
    overlay and test process (the `k8s check` tests still render through the command)."""
    objects: list[Obj] = json.loads(_rendered(overlay))
    return objects


def server_container(objects: list[Obj]) -> tuple[Obj, Obj]:
    """(pod template, container) of the overlay's one agenthost server behind the Service
    (not a queue worker's)."""
    found = [
        (template, container)
        for _, template in pod_templates(objects)
        for container in template["spec"]["containers"]
        if is_server_container(container)
        and template["metadata"]["labels"].get("app.kubernetes.io/component") != "worker"
    ]
    assert len(found) == 1, found
    return found[0]


def metrics_text(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text: str = resp.read().decode()
        return text


def scrape_metric_names(url: str) -> set[str]:
    text = metrics_text(url)
    return {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M)}


# -- rendering and schema validation ----------------------------------------------------------


def test_the_overlays_are_dev_production_and_production_keda() -> None:
    assert OVERLAYS == [
        "dev", "production", "production-keda", "production-postgres", "production-workers",
        "production-workers-postgres",
    ]  # fmt: skip


def test_the_workers_overlay_splits_api_and_workers_each_with_its_autoscaler() -> None:
    objects = rendered("production-workers")
    deployments = {d["metadata"]["name"]: d for d in find(objects, "Deployment")}
    assert set(deployments) == {"agenthost", "agenthost-worker"}
    roles = {}
    for name, deployment in deployments.items():
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        env, missing = container_env(objects, container)
        assert missing == ["Secret/agenthost-secrets"]  # made outside git, as in production
        assert env["AGENTHOST_AUTH"] == "keys"  # the overlay's ConfigMap reaches both
        roles[name] = env[env_name("role")]
        assert container["image"].startswith("registry.example.com/")
    assert roles == {"agenthost": "api", "agenthost-worker": "worker"}
    # No Service selects the workers: clients reach the api pods only.
    for service in find(objects, "Service"):
        assert service["spec"]["selector"].get("app.kubernetes.io/component") == "server"
    [hpa] = find(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "agenthost"
    [scaled] = find(objects, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "agenthost-worker"
    [trigger] = scaled["spec"]["triggers"]
    assert metric_names_in_query(trigger["metadata"]["query"]) == {"agenthost_queue_depth"}
    worker_env, _ = container_env(
        objects, deployments["agenthost-worker"]["spec"]["template"]["spec"]["containers"][0]
    )
    assert trigger["metadata"]["threshold"] == worker_env[env_name("worker_concurrency")]


async def test_the_postgres_workers_overlay_scales_workers_on_the_queue_tables_count(
    postgres_url: str,
) -> None:
    objects = rendered("production-workers-postgres")
    [scaled] = find(objects, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "agenthost-worker"
    [trigger] = scaled["spec"]["triggers"]  # the Prometheus trigger is replaced, not added to
    assert trigger["type"] == "postgresql" and trigger["metricType"] == "AverageValue"
    # Its connection comes from a Secret made outside git, through the overlay's
    # TriggerAuthentication; nothing of the database is in the manifests.
    [auth] = find(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "connection", "name": "agenthost-keda-postgresql", "key": "connection"}
    ]
    assert not find(objects, "Secret")
    worker = next(d for d in find(objects, "Deployment") if d["metadata"]["name"].endswith("r"))
    env, missing = container_env(objects, worker["spec"]["template"]["spec"]["containers"][0])
    assert missing == ["Secret/agenthost-secrets"] and env[env_name("role")] == "worker"
    assert trigger["metadata"]["targetQueryValue"] == env[env_name("worker_concurrency")]
    assert env["AGENTHOST_RETENTION"] == "0"  # production-postgres's data tier
    # The query, run on a database with agenthost's schema, counts the queue's turns.
    queue = create_queue(postgres_url, claim_after=10.0)
    await queue.open()
    try:
        for n in range(3):
            await queue.enqueue(QueuedTurn(f"acme/s{n}", f"t{n}", "hi"))
        [delivery] = await queue.take("w", 1, wait=5)  # running turns count too
        conn = await asyncpg.connect(postgres_url)
        try:
            assert await conn.fetchval(trigger["metadata"]["query"]) == 3
            await queue.ack(delivery)
            assert await conn.fetchval(trigger["metadata"]["query"]) == 2
        finally:
            await conn.close()
    finally:
        await queue.close()


def test_the_postgres_overlay_takes_its_database_from_the_secret_and_ships_none() -> None:
    objects = rendered("production-postgres")
    assert not [o for o in objects if o["kind"] in ("StatefulSet", "PersistentVolumeClaim")]
    images = [
        c["image"]
        for o in objects
        if o["kind"] == "Deployment"
        for c in o["spec"]["template"]["spec"]["containers"]
    ]
    assert images and not [i for i in images if "postgres" in i]
    _, container = server_container(objects)
    assert {"secretRef": {"name": "agenthost-secrets"}} in container["envFrom"]
    config = next(o for o in objects if o["kind"] == "ConfigMap")["data"]
    assert config["AGENTHOST_RETENTION"] == "0"
    assert "AGENTHOST_STORE" not in config  # the URL holds a password: the Secret has it


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_of_every_overlay_is_valid(overlay: str) -> None:
    objects = rendered(overlay)
    kinds = {obj["kind"] for obj in objects}
    assert {"Deployment", "Service", "Ingress", "PodDisruptionBudget", "ConfigMap"} <= kinds
    # Exactly one autoscaler per Deployment: the HPA, or KEDA's ScaledObject in its place.
    scaled = sorted(
        o["spec"]["scaleTargetRef"]["name"]
        for o in objects
        if o["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")
    )
    servers = [
        d["metadata"]["name"]
        for d in find(objects, "Deployment")
        if any(is_server_container(c) for c in d["spec"]["template"]["spec"]["containers"])
    ]
    assert scaled == sorted(servers)
    for obj in objects:
        assert validate_object(obj, DEFAULT_KUBERNETES_VERSION) == [], obj["metadata"]["name"]


def test_the_production_deployment_is_the_one_the_issue_asks_for() -> None:
    objects = rendered("production")
    deployment = find(objects, "Deployment", "agenthost")[0]
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    template, container = server_container(objects)
    assert template["spec"]["securityContext"]["runAsNonRoot"] is True
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"] and container["resources"]["limits"]
    hpa = find(objects, "HorizontalPodAutoscaler", "agenthost")[0]["spec"]
    assert hpa["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "agenthost_active_connections"},
                "target": {"type": "AverageValue", "averageValue": "100"},
            },
        }
    ]
    up, down = hpa["behavior"]["scaleUp"], hpa["behavior"]["scaleDown"]
    assert up["stabilizationWindowSeconds"] == 30
    assert up["policies"] == [{"type": "Pods", "value": 5, "periodSeconds": 60}]
    assert down["stabilizationWindowSeconds"] == 300
    assert down["policies"] == [{"type": "Pods", "value": 2, "periodSeconds": 120}]
    annotations = find(objects, "Ingress", "agenthost")[0]["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600


def test_unknown_fields_and_crd_typos_are_errors() -> None:
    objects = rendered("production-keda")
    deployment = copy.deepcopy(find(objects, "Deployment", "agenthost")[0])
    deployment["spec"]["replicaz"] = 3
    assert any("'replicaz' was unexpected" in m for m in validate_object(deployment, "1.33"))

    scaled = copy.deepcopy(find(objects, "ScaledObject", "agenthost")[0])
    trigger = scaled["spec"]["triggers"][0]["metadata"]
    trigger["treshold"] = trigger.pop("threshold")
    scaled["spec"]["minReplicas"] = 1
    messages = validate_object(scaled, "1.33")
    assert any("'treshold' was unexpected" in m for m in messages)
    assert any("'threshold' is a required property" in m for m in messages)
    assert any("'minReplicas' was unexpected" in m for m in messages)

    monitor = copy.deepcopy(find(objects, "ServiceMonitor", "agenthost")[0])
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    assert any("interval" in m for m in validate_object(monitor, "1.33"))

    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert "no schema for example.com/v1 Widget" in validate_object(unknown, "1.33")[0]


# -- the manifests against a running server and the code --------------------------------------


def test_probes_and_autoscaling_metrics_exist_on_a_running_server(
    agenthost_factory: Callable[..., AgentHostProcess],
) -> None:
    # The server runs with the dev overlay's configuration (its in-cluster Redis aside).
    objects = rendered("dev")
    _, container = server_container(objects)
    env, _ = container_env(objects, container)
    config = {
        key.removeprefix(ENV_PREFIX).lower(): value
        for key, value in env.items()
        if key not in (env_name("store"), env_name("host"), env_name("port"))
    }
    server = agenthost_factory(**config)
    exported = scrape_metric_names(server.url)
    assert "agenthost_active_connections" in exported

    for overlay in OVERLAYS:
        objects = rendered(overlay)
        _, container = server_container(objects)
        env, _ = container_env(objects, container)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert int(env[env_name("port")]) in ports.values()
        for probe in ("readinessProbe", "livenessProbe"):
            http_get = container[probe]["httpGet"]
            assert ports.get(http_get["port"], http_get["port"]) == int(env[env_name("port")])
            assert http_status(server.url + http_get["path"]) == 200, (overlay, probe)
        for hpa in find(objects, "HorizontalPodAutoscaler"):
            for metric in hpa["spec"]["metrics"]:
                assert metric["pods"]["metric"]["name"] in exported
        for scaled in find(objects, "ScaledObject"):
            for trigger in scaled["spec"]["triggers"]:
                if trigger["type"] != "prometheus":
                    continue  # a postgresql trigger asks the database (tested above)
                names = metric_names_in_query(trigger["metadata"]["query"])
                assert names and names <= exported
    for rule in load_adapter_rules(K8S / "prometheus-adapter" / "values.yaml"):
        assert served_metric(rule) in exported


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_agenthost_variable_is_a_setting(overlay: str) -> None:
    objects = rendered(overlay)
    names: list[str] = []
    for source in find(objects, "ConfigMap") + find(objects, "Secret"):
        names += [*source.get("data", {}), *source.get("stringData", {})]
    for _, template in pod_templates(objects):
        for container in template["spec"]["containers"]:
            names += [entry["name"] for entry in container.get("env", [])]
    ours = [name for name in names if name.startswith(ENV_PREFIX)]
    assert ours, "no AGENTHOST_* variable found"
    assert set(ours) <= SETTING_ENV_NAMES


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_grace_period_outlasts_the_drain(overlay: str) -> None:
    objects = rendered(overlay)
    template, container = server_container(objects)
    env, _ = container_env(objects, container)
    drain_timeout = float(env[env_name("drain_timeout")])
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[:3] == ["agenthost", "k8s", "prestop"]
    delay = prestop_seconds(container)
    assert delay == 5
    grace = template["spec"]["terminationGracePeriodSeconds"]
    assert grace > drain_timeout + delay + DRAIN_CANCEL_SECONDS


def test_prestop_seconds_reads_every_form_of_hook() -> None:
    def hook(pre_stop: Obj) -> Obj:
        return {"lifecycle": {"preStop": pre_stop}}

    assert prestop_seconds(hook({"exec": {"command": ["agenthost", "k8s", "prestop"]}})) == 5
    assert prestop_seconds(hook({"exec": {"command": ["x", "prestop", "--delay=7.5"]}})) == 7.5
    assert prestop_seconds(hook({"exec": {"command": ["sh", "-c", "sleep 12 && y"]}})) == 12
    assert prestop_seconds(hook({"sleep": {"seconds": 3}})) == 3
    assert prestop_seconds({}) == 0


def test_the_image_runs_as_the_user_and_port_the_pods_expect() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    template, container = server_container(rendered("production"))
    assert re.search(
        r"^FROM python:3\.11-slim|^ARG PYTHON_IMAGE=python:3\.11-slim", dockerfile, re.M
    )
    assert len(re.findall(r"^FROM ", dockerfile, re.M)) >= 2  # multi-stage
    user = re.findall(r"^USER (\d+)", dockerfile, re.M)
    assert user == [str(template["spec"]["securityContext"]["runAsUser"])]
    assert re.search(r"^EXPOSE 8000$", dockerfile, re.M)
    assert container["ports"][0]["containerPort"] == 8000
    assert 'ENTRYPOINT ["agenthost"]' in dockerfile and 'CMD ["serve"]' in dockerfile
    assert "AGENTHOST_HOST=0.0.0.0" in dockerfile
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ignored[ignored.index("**") :][:1] == ["**"] and "!src/" in ignored


# -- agenthost k8s check ----------------------------------------------------------------------


def run_check(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["k8s", "check", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_check_passes_on_the_repository() -> None:
    code, output = run_check("--dir", str(K8S))
    assert code == 0, output
    for overlay in OVERLAYS:
        assert f"{overlay}: " in output and "valid for Kubernetes" in output


@pytest.fixture
def broken_copy(tmp_path: Path) -> Path:
    """A copy of deploy/kubernetes to break."""
    root = tmp_path / "kubernetes"
    shutil.copytree(K8S, root)
    return root


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def test_check_names_an_unknown_variable_and_a_bad_field(broken_copy: Path) -> None:
    edit(
        broken_copy / "overlays/dev/kustomization.yaml",
        "- AGENTHOST_LOG_LEVEL=debug",
        "- AGENTHOST_LOG_LEVL=debug",
    )
    edit(broken_copy / "base/deployment.yaml", "minReadySeconds: 5", "minReadySecond: 5")
    code, output = run_check("--dir", str(broken_copy), "--overlay", "dev")
    assert code == 1
    assert "dev: " in output and "problem" in output
    assert "AGENTHOST_LOG_LEVL is not an agenthost setting" in output
    assert "did you mean AGENTHOST_LOG_LEVEL?" in output
    assert "Deployment/agenthost: spec: Additional properties are not allowed" in output
    assert "'minReadySecond' was unexpected" in output


def test_check_names_drain_timing_probes_and_metrics(broken_copy: Path) -> None:
    edit(
        broken_copy / "base/deployment.yaml",
        "terminationGracePeriodSeconds: 120",
        "terminationGracePeriodSeconds: 100",
    )
    edit(broken_copy / "base/deployment.yaml", "path: /readyz", "path: /healthz")
    edit(broken_copy / "base/hpa.yaml", "name: agenthost_active_connections", "name: conns")
    edit(
        broken_copy / "components/keda/scaledobject.yaml",
        "sum(agenthost_active_connections",
        "sum(agenthost_open_connections",
    )
    code, output = run_check("--dir", str(broken_copy))
    assert code == 1
    assert "terminationGracePeriodSeconds 100 must exceed" in output
    assert "= 105 s" in output  # 5 s preStop + 90 s drain + 10 s for cancelled turns
    assert "readinessProbe should GET /readyz" in output
    assert "metric conns is not exported on GET /metrics" in output
    assert "no prometheus-adapter rule" in output and "serves conns" in output
    assert "query reads agenthost_open_connections, not exported" in output


def test_check_names_a_broken_reference_and_a_setting_that_does_not_parse(
    broken_copy: Path,
) -> None:
    edit(broken_copy / "base/service.yaml", "targetPort: http", "targetPort: web")
    edit(
        broken_copy / "overlays/dev/kustomization.yaml",
        "- AGENTHOST_DRAIN_TIMEOUT=30",
        "- AGENTHOST_DRAIN_TIMEOUT=soon",
    )
    code, output = run_check("--dir", str(broken_copy), "--overlay", "dev")
    assert code == 1
    assert "Service/agenthost: targetPort 'web' is no container port" in output
    assert "settings do not parse" in output and "drain_timeout" in output


def test_check_names_a_missing_trigger_authentication_and_a_query_off_the_queue(
    broken_copy: Path,
) -> None:
    overlay = broken_copy / "overlays/production-workers-postgres"
    edit(overlay / "worker-scaledobject.yaml", "name: agenthost-worker-postgresql",
         "name: agenthost-worker-pg")  # fmt: skip
    edit(overlay / "worker-scaledobject.yaml", "FROM agenthost_turn_queue",
         "FROM agenthost_turns_queue")  # fmt: skip
    edit(overlay / "worker-scaledobject.yaml", 'targetQueryValue: "16"',
         'targetQueryValu: "16"')  # fmt: skip
    code, output = run_check("--dir", str(broken_copy), "--overlay", "production-workers-postgres")
    assert code == 1
    assert "authenticationRef agenthost-worker-pg is not in the overlay" in output
    assert "query reads agenthost_turns_queue, not a queue table" in output
    assert "'targetQueryValu' was unexpected" in output


def test_check_reports_an_unknown_overlay_and_a_kustomize_error(broken_copy: Path) -> None:
    code, output = run_check("--dir", str(broken_copy), "--overlay", "staging")
    assert code == 1
    assert "no overlay 'staging'" in output and "dev, production, production-keda" in output
    (broken_copy / "base/pdb.yaml").unlink()
    code, output = run_check("--dir", str(broken_copy), "--overlay", "production")
    assert code == 1
    assert "kubectl kustomize" in output and "pdb.yaml" in output


# -- agenthost k8s prestop --------------------------------------------------------------------


def run_prestop(server: AgentHostProcess, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env[env_name("port")] = str(server.port)
    env.update({env_name(k): v for k, v in settings.items()})
    return subprocess.run(
        [AGENTHOST, "k8s", "prestop", "--delay", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_prestop_drains_the_server_and_returns_once_it_has_exited(
    agenthost_factory: Callable[..., AgentHostProcess],
) -> None:
    server = agenthost_factory(admin_token="k8s-token", drain_timeout=5)
    result = run_prestop(server, admin_token="k8s-token")
    assert result.returncode == 0, result.stderr
    assert "drained" in result.stderr
    assert http_status(server.url + "/healthz") is None
    assert server.proc is not None
    wait_until(lambda: server.proc is not None and server.proc.poll() is not None, 10, "exit")
    assert server.proc.returncode == 0


def test_prestop_waits_for_the_turn_in_flight_to_commit(
    agenthost_factory: Callable[..., AgentHostProcess],
) -> None:
    server = agenthost_factory(
        admin_token="k8s-token", drain_timeout=20, llm="sim://?latency_ms=1500"
    )
    answers: list[int] = []

    def post_turn() -> None:
        request = urllib.request.Request(
            server.url + "/v1/sessions/k8s/turns",
            data=b'{"message": "in flight"}',
            headers={"content-type": "application/json", "Idempotency-Key": "k8s-1"},
        )
        with urllib.request.urlopen(request, timeout=15) as resp:
            answers.append(resp.status)

    turn = threading.Thread(target=post_turn)
    turn.start()
    wait_until(
        lambda: "agenthost_inflight_turns 1" in metrics_text(server.url), 10, "a turn in flight"
    )
    result = run_prestop(server, admin_token="k8s-token")
    turn.join(15)
    assert result.returncode == 0, result.stderr
    assert answers == [200]  # the drain let the turn finish and commit
    assert http_status(server.url + "/healthz") is None


def test_prestop_without_a_token_leaves_the_drain_to_sigterm(
    agenthost_factory: Callable[..., AgentHostProcess],
) -> None:
    server = agenthost_factory()
    result = run_prestop(server)
    assert result.returncode == 0
    assert "SIGTERM will start the drain" in result.stderr
    assert http_status(server.url + "/readyz") == 200


def test_prestop_with_a_wrong_token_fails_and_leaves_the_server_ready(
    agenthost_factory: Callable[..., AgentHostProcess],
) -> None:
    server = agenthost_factory(admin_token="right")
    result = run_prestop(server, admin_token="wrong")
    assert result.returncode == 1
    assert "answered 401" in result.stderr
    assert http_status(server.url + "/readyz") == 200
