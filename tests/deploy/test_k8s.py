"""The Kubernetes manifests in deploy/k8s: valid against Kubernetes' own schemas (strict, offline), wired
to each other, and running the server exactly as docker-compose.yml does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.conftest import ROOT
from trainer.cluster import Cluster, cluster_from_env

pytestmark = pytest.mark.fast

K8S = ROOT / "deploy" / "k8s"
WORKERS = K8S / "workers"  # applied instead of the one-pod trainer Job, for training across workers
KUBERNETES_VERSION = "1.37.0"


def kustomization(folder: Path = K8S) -> dict[str, Any]:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


def resources(folder: Path = K8S) -> list[dict[str, Any]]:
    """Every resource of the files the kustomization lists."""
    return [
        document
        for name in kustomization(folder)["resources"]
        for document in yaml.safe_load_all((folder / name).read_text())
        if document
    ]


def resource(kind: str, name: str, folder: Path = K8S) -> dict[str, Any]:
    (found,) = [r for r in resources(folder) if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def pod_spec(kind: str, name: str) -> dict[str, Any]:
    return resource(kind, name)["spec"]["template"]["spec"]


def compose_serving() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["serving"]


@pytest.mark.parametrize("folder", [K8S, WORKERS], ids=["platform", "workers"])
def test_every_file_in_the_folder_is_applied_and_valid_in_strict_mode(folder: Path) -> None:
    listed = set(kustomization(folder)["resources"])
    assert listed == {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
    for document in resources(folder):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)  # raises when invalid


def test_an_unknown_field_is_refused() -> None:
    """The validator is strict: a misspelt field cannot slip through."""
    deployment = resource("Deployment", "serving")
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPorts"] = 8500
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_the_server_runs_the_compose_files_flags_and_healthcheck() -> None:
    """Readiness waits for an AVAILABLE version, as the compose healthcheck does. TF Serving's image
    opens no port before one, so liveness waits for the port to answer (the start-up probe)."""
    (container,) = pod_spec("Deployment", "serving")["containers"]
    serving = compose_serving()
    assert container["args"] == serving["command"]
    assert container["readinessProbe"]["exec"]["command"] == serving["healthcheck"]["test"][1:]
    startup = container["startupProbe"]
    # A page that answers without a version: a server that is up with nothing to serve yet must not be
    # restarted for it; but a page, not the port, which the kernel accepts for a wedged server too.
    assert startup["httpGet"] == container["livenessProbe"]["httpGet"]
    assert startup["httpGet"]["path"] == "/monitoring/prometheus/metrics"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 3600  # the first training's time
    assert "initialDelaySeconds" not in container["livenessProbe"]


def test_tf_serving_is_never_pid_1_where_sigterm_must_stop_it() -> None:
    """TF Serving sets no SIGTERM handler, and PID 1 ignores a signal without one: as PID 1 it waited
    out the whole grace period on every stop. No Docker test can run its image here, so the files are
    read: Docker's init in Compose, the pod's shared process namespace (pause is PID 1) in Kubernetes."""
    assert compose_serving()["init"] is True
    assert pod_spec("Deployment", "serving")["shareProcessNamespace"] is True


@pytest.mark.parametrize(
    ("kind", "name"), [("Deployment", "serving"), ("Deployment", "dashboard"), ("Job", "trainer")]
)
def test_every_pod_meets_the_restricted_pod_security_standard(kind: str, name: str) -> None:
    """What Kubernetes' "restricted" Pod Security level asks beyond the defaults: no root, the runtime's
    seccomp profile, no privilege escalation, no capabilities."""
    spec = pod_spec(kind, name)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in spec["containers"]:
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        }


@pytest.mark.parametrize(
    ("kind", "name", "writes"),
    [("Job", "trainer", True), ("Deployment", "serving", False), ("Deployment", "dashboard", False)],
)
def test_only_the_trainer_writes_the_models_volume(kind: str, name: str, writes: bool) -> None:
    spec = pod_spec(kind, name)
    (mount,) = [m for c in spec["containers"] for m in c["volumeMounts"] if m["name"] == "models"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == "models"]
    assert mount["mountPath"] == "/models"
    assert mount.get("readOnly", False) is not writes
    assert (
        volume["persistentVolumeClaim"]["claimName"]
        == resource("PersistentVolumeClaim", "models")["metadata"]["name"]
    )
    assert spec["securityContext"]["runAsUser"] == 10001  # the images' user, never root


def test_services_and_the_autoscaler_reach_their_pods() -> None:
    labels = {
        r["metadata"]["name"]: r["spec"]["template"]["metadata"]["labels"]
        for r in resources()
        if r["kind"] == "Deployment"
    }
    for service in (r for r in resources() if r["kind"] == "Service"):
        selector = service["spec"]["selector"]
        assert any(selector.items() <= pod.items() for pod in labels.values()), service["metadata"]["name"]
    target = resource("HorizontalPodAutoscaler", "serving")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "serving")
    dashboard_env = {
        e["name"]: e["value"] for e in pod_spec("Deployment", "dashboard")["containers"][0]["env"]
    }
    assert dashboard_env["SERVING_GRPC"] == "serving:8500"
    # The Serving page reads each replica: through the headless Service, on its REST port.
    metrics = dashboard_env["SERVING_METRICS"]
    assert metrics.startswith("http://serving-replicas:8501/")
    headless = resource("Service", "serving-replicas")["spec"]
    assert headless["clusterIP"] == "None" and 8501 in [p["port"] for p in headless["ports"]]


def test_the_kustomization_sets_every_image_once() -> None:
    used = {
        c["image"].split()[0]
        for r in resources()
        if "template" in r.get("spec", {})
        for c in r["spec"]["template"]["spec"]["containers"]
    }
    assert used == {image["name"] for image in kustomization()["images"]}


def test_the_indexed_job_gives_each_worker_the_cluster_and_its_completion_index() -> None:
    """Pod i of the Indexed Job is worker i: TF_CONFIG, once Kubernetes expands $(WORKER_INDEX) from
    the completion index, names every pod by the DNS name the headless Service gives it."""
    job = resource("Job", "trainer-workers", WORKERS)
    service = resource("Service", "trainer-workers", WORKERS)
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    assert service["spec"]["clusterIP"] == "None" and pod["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    (container,) = pod["containers"]
    env = container["env"]
    assert [e["name"] for e in env] == ["WORKER_INDEX", "TF_CONFIG"]  # expanded only from earlier ones
    assert env[0]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    port = service["spec"]["ports"][0]["port"]
    assert container["ports"][0]["containerPort"] == port
    name = job["metadata"]["name"]
    expected = tuple(f"{name}-{i}.{pod['subdomain']}:{port}" for i in range(spec["completions"]))
    for index in range(spec["completions"]):
        tf_config = env[1]["value"].replace("$(WORKER_INDEX)", str(index))
        assert cluster_from_env({"TF_CONFIG": tf_config}) == Cluster(expected, index)
    assert pod["volumes"] == pod_spec("Job", "trainer")["volumes"]  # the shared model directory
