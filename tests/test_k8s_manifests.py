"""deploy/k8s/, offline: each kustomization rendered by ``kubectl kustomize``, every object checked
against the Kubernetes JSON schemas (kubernetes-validate, strict), the two custom resources it has no
schema for checked by hand, and the properties the deployment relies on asserted.

Needs ``kubectl`` (kustomize is built in). Without it these tests fail saying how to install it,
unless BRIDGE_SKIP_KUBECTL=1 is set (a developer's own choice; ignored where CI is set)."""

from __future__ import annotations

import copy
import functools
import importlib
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest

from bridge.settings import Settings
from tests.support.process import ROOT, free_port, minimal_env

yaml: Any = importlib.import_module("yaml")  # untyped: reached through Any
kubernetes_validate: Any = importlib.import_module("kubernetes_validate")

K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.32.0"
KUSTOMIZATIONS = ["base", "redis", "overlays/try-it", "overlays/keda", "prometheus-adapter"]
# Custom resources: no schema in kubernetes-validate, so _check_custom_resource looks at them.
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject"), ("monitoring.coreos.com/v1", "PodMonitor")}

Doc = dict[str, Any]


@functools.cache
def _render(directory: str) -> tuple[Doc, ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        if os.environ.get("BRIDGE_SKIP_KUBECTL") == "1" and not os.environ.get("CI"):  # never skipped in CI
            pytest.skip("kubectl is not installed (BRIDGE_SKIP_KUBECTL=1)")
        pytest.fail(
            "kubectl is needed to render deploy/k8s (`kubectl kustomize`) and is not on PATH: install kubectl "
            "1.27 or later (https://kubernetes.io/docs/tasks/tools/), or set BRIDGE_SKIP_KUBECTL=1 to skip "
            "these tests on your machine"
        )
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S / directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"kubectl kustomize {directory}: {done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def _one(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _named(items: list[Doc], name: str) -> Doc:
    return next(item for item in items if item["name"] == name)


def _bridge(docs: tuple[Doc, ...]) -> tuple[Doc, Doc]:
    """The bridge's Deployment and its container."""
    deployment = _one(docs, "Deployment", "bridge")
    return deployment, _named(deployment["spec"]["template"]["spec"]["containers"], "bridge")


def _flags(command: list[str]) -> dict[str, str]:
    """``--name value`` pairs of a command line."""
    return {command[i]: command[i + 1] for i in range(len(command) - 1) if command[i].startswith("--")}


def _config_map_env(docs: tuple[Doc, ...], deployment: Doc) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    names = [source["configMapRef"]["name"] for source in container["envFrom"] if "configMapRef" in source]
    env: dict[str, str] = {}
    for name in names:
        env.update(_one(docs, "ConfigMap", name)["data"])
    return env


def _drain_bound(settings: Settings) -> float:
    """The longest SIGTERM drain of ``bridge serve``, as its code does it."""
    bound = (
        settings.server.shutdown_timeout  # drain_calls: running calls finish
        + settings.gladia.finish_timeout
        + 1.0  # ...then closed with 1001, their last finals awaited
        + 2 * settings.webhook.timeout  # ...and the webhook queue flushed
        + settings.gladia.finish_timeout
        + 5.0  # aiohttp's own shutdown_timeout (serve._run)
        + 2 * settings.webhook.timeout  # cleanup: the last delivery flush and the outbox close
    )
    if settings.fleet.redis_url is not None:
        # Leaving the fleet (Fleet.close): pending lease writes, then one Redis call under the
        # client's socket timeout.
        fleet = settings.fleet
        bound += fleet.renew_interval + max(5.0, 2 * fleet.action_poll_ms / 1000 + 1)
    return bound


def _check_custom_resource(doc: Doc) -> None:
    """What the CRDs require (KEDA's keda.sh_scaledobjects.yaml, the Operator's PodMonitor)."""
    assert isinstance(doc["metadata"]["name"], str)
    spec = doc["spec"]
    if doc["kind"] == "ScaledObject":
        assert isinstance(spec["scaleTargetRef"]["name"], str)
        assert spec["triggers"], "a ScaledObject needs a trigger"
        for trigger in spec["triggers"]:
            assert isinstance(trigger["type"], str)
            # metadata: a map of strings (threshold: "50", not 50).
            assert all(isinstance(v, str) for v in trigger["metadata"].values()), trigger["metadata"]
            assert trigger.get("metricType", "AverageValue") in ("AverageValue", "Value", "Utilization")
        for key in ("minReplicaCount", "maxReplicaCount", "pollingInterval"):
            assert isinstance(spec.get(key, 0), int)
    else:
        assert isinstance(spec["selector"], dict)
        for endpoint in spec["podMetricsEndpoints"]:
            assert isinstance(endpoint["port"], str) and endpoint["path"].startswith("/")


@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_renders_and_every_object_matches_the_kubernetes_schema(directory: str) -> None:
    """`kubectl kustomize` renders it, and every object validates against the Kubernetes 1.32 schemas
    (strict: no unknown field); the custom resources have what their CRDs require."""
    docs = _render(directory)
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            assert (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS, f"no schema for {doc['kind']}"
            _check_custom_resource(doc)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{directory}: {doc['kind']}/{doc['metadata']['name']}: {where}: {exc.message}")


def test_the_validator_rejects_a_misspelt_field() -> None:
    """The schema check has teeth: a misspelt probe field in the Deployment fails it."""
    deployment, _ = _bridge(_render("base"))
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {"httpGet": {"path": "/readyz"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_bridge_is_a_deployment_that_drains() -> None:
    """A Deployment (no StatefulSet runs the bridge) rolling with maxUnavailable 0; readiness on /readyz
    and liveness on /healthz at the serving port; a preStop that runs `bridge wait-calls`; a grace
    period longer than the preStop bound plus the longest SIGTERM drain of these settings."""
    docs = _render("overlays/try-it")
    deployment, container = _bridge(docs)
    assert all(
        d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") != "bridge"
        for d in docs
        if d["kind"] == "StatefulSet"
    )
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": "25%"}
    assert container["args"] == ["bridge", "serve"]
    port = _named(container["ports"], "http")["containerPort"]
    env = _config_map_env(docs, deployment)
    secrets = {"GLADIA_API_KEY": "k", "BRIDGE_SECRET": "s", "BRIDGE_DATA_DIR": "/data"}
    settings = Settings.load(environ={**env, **secrets}, config_path=ROOT / "config" / "bridge.toml")
    assert port == settings.server.port and settings.server.worker_count == 1
    assert settings.fleet.redis_url is not None  # fleet mode, on the overlay's Redis
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}

    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["bridge", "wait-calls"]
    flags = _flags(command)
    assert "--url" not in flags  # the default, http://127.0.0.1:8080, is this container
    assert float(flags.get("--settle", 0)) < float(flags["--timeout"])
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= float(flags["--timeout"]) + _drain_bound(settings), (grace, flags, _drain_bound(settings))


def test_the_prestop_command_line_is_one_the_bridge_accepts() -> None:
    """The manifest's preStop arguments, run for real (pointed at a port nothing listens on): exit 0."""
    _, container = _bridge(_render("base"))
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    url = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [sys.executable, "-m", *command, "--url", url],
        env=minimal_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.startswith("wait-calls: nothing listening"), done.stderr


def test_secrets_instance_id_and_a_read_only_pod() -> None:
    """Secrets come from bridge-secrets (the Gladia key and BRIDGE_SECRET required), the fleet instance id
    from the pod's name, Redis from the in-cluster Service; non-root, read-only root file system, the data
    dir on an emptyDir."""
    docs = _render("overlays/try-it")
    deployment, container = _bridge(docs)
    env = {e["name"]: e for e in container["env"]}
    for name, optional in (
        ("GLADIA_API_KEY", False),
        ("BRIDGE_SECRET", False),
        ("BOT_WEBHOOK_SECRET", True),
        ("BRIDGE_API_TOKEN", True),
    ):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"], ref.get("optional", False)) == ("bridge-secrets", name, optional)
    assert env["BRIDGE_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert {"secretRef": {"name": "bridge-secrets"}} in container["envFrom"]

    redis_url = _config_map_env(docs, deployment)["BRIDGE_REDIS_URL"]
    service = _one(docs, "Service", "redis")
    assert redis_url == f"redis://redis:{service['spec']['ports'][0]['port']}/0"

    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    data_dir = env["BRIDGE_DATA_DIR"]["value"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == data_dir)
    assert "emptyDir" in _named(pod["volumes"], mount["name"])
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == _named(container["ports"], "http")["containerPort"]


def test_service_and_disruption_budget_select_the_bridge_pods() -> None:
    """The Service sends to the pods' http port; the PodDisruptionBudget lets one pod go at a time."""
    docs = _render("base")
    deployment, _ = _bridge(docs)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = _one(docs, "Service", "bridge")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = _one(docs, "PodDisruptionBudget", "bridge")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_autoscaling_on_active_calls_with_the_adapter_or_keda() -> None:
    """try-it: an autoscaling/v2 HPA on the pods metric bridge_active_calls (averaged), scaling down
    after 5 minutes at the earliest, fed by the adapter rule of that name; keda: no HPA, a ScaledObject
    with the same target, bounds and behaviour, querying bridge_active_calls in the overlay's namespace."""
    docs = _render("overlays/try-it")
    hpa = _one(docs, "HorizontalPodAutoscaler", "bridge")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "bridge"}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == "bridge_active_calls"
    assert metric["pods"]["target"]["type"] == "AverageValue"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300

    values = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    assert "bridge_active_calls" in rule["seriesQuery"] and rule["name"]["as"] == "bridge_active_calls"
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}

    keda = _render("overlays/keda")
    assert not [d for d in keda if d["kind"] == "HorizontalPodAutoscaler"]
    scaled = _one(keda, "ScaledObject", "bridge")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "bridge"
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (
        hpa["spec"]["minReplicas"],
        hpa["spec"]["maxReplicas"],
    )
    assert scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == hpa["spec"]["behavior"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    namespace = _one(keda, "Deployment", "bridge")["metadata"]["namespace"]
    assert trigger["metadata"]["query"].startswith(f'sum(bridge_active_calls{{namespace="{namespace}"')
    assert trigger["metadata"]["threshold"] == metric["pods"]["target"]["averageValue"]


def test_the_pod_monitor_scrapes_the_bridge_metrics_port() -> None:
    """The Operator's PodMonitor selects the bridge pods and scrapes their http port's /metrics."""
    monitor = _one(_render("prometheus-adapter"), "PodMonitor", "bridge")
    deployment, container = _bridge(_render("base"))
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics" and any(p["name"] == endpoint["port"] for p in container["ports"])


def test_redis_for_trying_it_keeps_an_append_only_file_on_a_volume() -> None:
    """The try-out Redis: one replica, appendonly yes with appendfsync always, no eviction, /data on a
    PersistentVolumeClaim template."""
    redis = _one(_render("overlays/try-it"), "StatefulSet", "redis")
    assert redis["spec"]["replicas"] == 1
    container = _named(redis["spec"]["template"]["spec"]["containers"], "redis")
    flags = _flags(container["args"])
    assert container["args"][0] == "redis-server"
    assert (flags["--appendonly"], flags["--appendfsync"], flags["--maxmemory-policy"]) == (
        "yes",
        "always",
        "noeviction",
    )
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    mount = _named(container["volumeMounts"], claim["metadata"]["name"])
    assert mount["mountPath"] == flags["--dir"]


def test_readme_names_the_pieces() -> None:
    """deploy/k8s/README.md covers how to apply each overlay and what a Redis failover can lose."""
    text = (K8S / "README.md").read_text()
    for needle in (
        "kubectl apply -k deploy/k8s/overlays/try-it",
        "kubectl apply -k deploy/k8s/overlays/keda",
        "Sentinel",
        "appendfsync",
    ):
        assert needle in text, needle
