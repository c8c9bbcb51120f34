"""`docker compose --profile embedded up` run for real, then drilled: a new version under load, the
server's process killed, the volume's permissions, and `down -v`. The tests run in order on one project.

The default profile's `tensorflow/serving` image cannot be pulled on our machines; tests/stack checks it
statically (the compose file, the flags, the healthcheck's command)."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import numpy as np
import pytest
from playwright.sync_api import Browser

from client import ServingClient, ServingClientError
from contract.signature import scale_pixels
from tests.conftest import ROOT, PredictLoad, model_states, wait_for
from tests.docker.conftest import ComposeProject
from tests.docker.engine import base_images
from tests.e2e.conftest import needs_chromium, open_page, screenshot
from trainer.data import Split

EMBEDDED = ("--profile", "embedded")
SERVER = "serving-embedded"


def available_versions(project: ComposeProject) -> set[int]:
    return {v for v, state in model_states(project.url("REST_PORT")).items() if state == "AVAILABLE"}


def health(project: ComposeProject, service: str) -> str:
    state = project.inspect(service)["State"]
    return f"{state['Status']}/{state.get('Health', {}).get('Status', 'none')}"


def assert_reload_calls_stop_at_the_balancer(project: ComposeProject) -> None:
    """Only the calls clients need are forwarded from outside: ModelService's unauthenticated reload,
    and any other service (TF Serving's profiler), are PERMISSION_DENIED; model status and gRPC health
    pass."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc
    from tensorflow_serving.config import model_server_config_pb2

    empty = model_server_config_pb2.ModelServerConfig()
    empty.model_config_list.SetInParent()
    with grpc.insecure_channel(project.grpc_target) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=empty), timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as refused:
            channel.unary_unary("/tensorflow.ProfilerService/Monitor")(b"", timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert [s.state for s in ServingClient.grpc(project.grpc_target).status()] == ["AVAILABLE"]


@needs_chromium
def test_up_builds_trains_serves_and_shows_the_dashboard(
    project: ComposeProject, mnist_test: Split, browser: Browser
) -> None:
    started = time.monotonic()
    result = project.run(*EMBEDDED, "up", "--build", "--wait")
    assert result.returncode == 0, result.stderr[-3000:]
    print(f"up --build --wait: {time.monotonic() - started:.0f} s")  # for the README's figures (-s)

    containers = project.containers()
    assert set(containers) == {"trainer", SERVER, "balancer", "dashboard"}
    assert containers["trainer"]["State"] == "exited" and containers["trainer"]["ExitCode"] == 0
    assert containers[SERVER]["Health"] == containers["dashboard"]["Health"] == "healthy"
    # Only the balancer and the dashboard publish ports, on loopback unless HOST says otherwise.
    published = {
        (service, p["PublishedPort"], p["URL"])
        for service, c in containers.items()
        for p in c["Publishers"] or []
        if p["PublishedPort"]
    }
    assert published == {
        ("balancer", project.ports["GRPC_PORT"], "127.0.0.1"),
        ("balancer", project.ports["REST_PORT"], "127.0.0.1"),
        ("dashboard", project.ports["DASHBOARD_PORT"], "127.0.0.1"),
    }

    # The balancer sends traffic once its health check has seen the replica AVAILABLE.
    wait_for(lambda: available_versions(project) == {1}, 30, "version 1 through the balancer")
    images = scale_pixels(mnist_test.images[:20])
    over_grpc = ServingClient.grpc(project.grpc_target).predict(images)
    over_rest = ServingClient.rest(project.url("REST_PORT")).predict(images)
    assert [p.digit for p in over_grpc] == [p.digit for p in over_rest]
    assert np.mean([p.digit for p in over_grpc] == mnist_test.labels[:20]) >= 0.7
    assert {p.version for p in over_grpc} == {1}
    assert_reload_calls_stop_at_the_balancer(project)

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    open_page(page, f"{project.url('DASHBOARD_PORT')}/models")
    page.get_by_text("Requests without a version go to version 1").wait_for(timeout=30_000)
    assert page.locator('[data-testid="stException"]').count() == 0
    screenshot(page, "docker-models")
    page.close()


# What a stage may add to the slim base, which carries no TensorFlow for either: the official
# python:3.11-slim image, which the stand-in replaces here, is about 130 MB unpacked, and the images
# must stay within 800 MB (the dashboard) and 500 MB (the server without TensorFlow).
ADDS_AT_MOST = {"dashboard": 650 * 10**6, SERVER: 370 * 10**6}


@pytest.mark.parametrize("service", sorted(ADDS_AT_MOST))
def test_the_slim_images_carry_no_tensorflow_and_stay_small(project: ComposeProject, service: str) -> None:
    image = project.containers()[service]["Image"]
    base = next(b for b in base_images(ROOT / "Dockerfile") if "python" in b)
    size = {
        name: int(project.engine.docker("image", "inspect", "--format", "{{.Size}}", name))
        for name in (image, base)
    }
    print(f"{service} image: {size[image] / 1e6:.0f} MB on a {size[base] / 1e6:.0f} MB base")  # for docs (-s)
    assert size[image] - size[base] <= ADDS_AT_MOST[service]
    found = project.run(
        *EMBEDDED, "run", "--rm", "--no-deps", "--entrypoint", "python", service, "-c", "import tensorflow"
    )
    assert found.returncode != 0 and "No module named 'tensorflow'" in found.stderr


def test_retrain_rolls_over_to_version_2_with_zero_failed_requests(
    project: ComposeProject, mnist_test: Split
) -> None:
    image = scale_pixels(mnist_test.images[0])
    with PredictLoad(project.grpc_target, image, clients=8) as load:
        wait_for(lambda: load.answered >= 50, 60, "traffic on version 1")
        started = time.monotonic()
        result = project.run("up", "trainer", RETRAIN="1")
        assert result.returncode == 0, result.stderr[-3000:]
        wait_for(lambda: load.versions[2] >= 50, 120, "version 2 to take traffic")
        print(f"RETRAIN=1 up trainer to traffic on version 2: {time.monotonic() - started:.0f} s")
    assert load.failures == [] and load.refused == 0
    assert available_versions(project) == {2}  # TF Serving's default policy: the latest version only
    assert load.versions[1] > 0


@needs_chromium
def test_a_killed_server_is_restarted_and_the_dashboard_recovers(
    project: ComposeProject, mnist_test: Split, browser: Browser
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    open_page(page, f"{project.url('DASHBOARD_PORT')}/models")
    page.get_by_text("Requests without a version go to version 2").wait_for(timeout=30_000)

    before = project.inspect(SERVER)["RestartCount"]
    killed = time.monotonic()
    said_down = page.get_by_text("is not answering")

    def crash_until_the_dashboard_says_so() -> bool:
        """Crash it (SIGKILL to its host PID: `docker kill` would count as a manual stop), and again
        as soon as each of Docker's first five restarts runs it: the server is back within a second
        (it loads no TensorFlow for model.tflite), so behind the balancer one outage can fall between
        two of the page's refreshes; Docker's doubling restart delays make a run of them last."""
        if said_down.is_visible():
            return True
        state = project.inspect(SERVER)
        count, pid = state["RestartCount"] - before, state["State"]["Pid"]
        if 0 < count < 6 and state["State"]["Running"] and pid > 0:  # 0 would be this test's own group
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return False

    os.kill(project.inspect(SERVER)["State"]["Pid"], signal.SIGKILL)
    wait_for(crash_until_the_dashboard_says_so, 60, "the dashboard to say the server is not answering")
    wait_for(lambda: project.inspect(SERVER)["RestartCount"] > before, 30, "Docker to restart the server")
    wait_for(lambda: health(project, SERVER) == "running/healthy", 60, "the server to be healthy again")
    print(f"SIGKILL to healthy again: {time.monotonic() - killed:.0f} s")
    page.get_by_text("Requests without a version go to version 2").wait_for(timeout=30_000)
    assert page.locator('[data-testid="stException"]').count() == 0
    page.close()

    # Through the balancer again once its health check has seen the replica back.
    image = scale_pixels(mnist_test.images[:1])
    client = ServingClient.grpc(project.grpc_target, retries=0, timeout=5)
    wait_for(lambda: answered_version(client, image) == 2, 30, "predictions through the balancer")


def answered_version(client: ServingClient, image: np.ndarray) -> int | None:
    try:
        return client.predict(image)[0].version
    except ServingClientError:
        return None


@pytest.mark.parametrize("service", [SERVER, "dashboard"])
def test_readers_mount_the_volume_read_only_and_the_trainer_wrote_it_as_non_root(
    project: ComposeProject, service: str
) -> None:
    assert project.inspect("trainer")["Config"]["User"] == "10001:10001"

    def execute(*command: str) -> tuple[int, str]:
        result = project.run(*EMBEDDED, "exec", "-T", service, *command)
        return result.returncode, (result.stdout + result.stderr).strip()

    assert execute("id", "-u") == (0, "10001")
    assert execute("stat", "-c", "%u", "/models/mnist/2/saved_model.pb") == (0, "10001")
    code, output = execute("touch", "/models/mnist/intruder")
    assert code != 0 and "Read-only file system" in output


def test_down_with_volumes_leaves_nothing_of_the_project(project: ComposeProject) -> None:
    assert any(project.leftovers().values())
    result = project.run(*EMBEDDED, "down", "--volumes")
    assert result.returncode == 0, result.stderr
    assert project.leftovers() == {"containers": [], "networks": [], "volumes": []}
