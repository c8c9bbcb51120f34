"""`SERVING_REPLICAS=3 docker compose --profile embedded up`: three replicas behind the balancer share
gRPC and REST request by request, and one of them stopped under load fails no request."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2

from contract.signature import INPUT, scale_pixels
from tests.conftest import BackgroundThreads, wait_for
from tests.docker.conftest import ComposeProject
from tests.docker.engine import Engine
from trainer.data import Split

SERVER = "serving-embedded"
REPLICAS = 3
CONNECTIONS = 6
PREDICT = "/tensorflow.serving.PredictionService/Predict"


@pytest.fixture(scope="module")
def replicas(engine: Engine) -> Iterator[ComposeProject]:
    project = ComposeProject(engine, replicas=REPLICAS)
    project.run("--profile", "embedded", "down", "--volumes", "--remove-orphans")
    result = project.run("--profile", "embedded", "up", "--build", "--wait")
    assert result.returncode == 0, result.stderr[-3000:]
    yield project
    project.run("--profile", "embedded", "down", "--volumes", "--remove-orphans")


def served_by_each(project: ComposeProject) -> dict[str, float]:
    """{container: OK requests it has answered}, read from each replica's own metrics endpoint."""
    fetch = (
        "import urllib.request; print(urllib.request.urlopen("
        "'http://127.0.0.1:8501/monitoring/prometheus/metrics', timeout=5).read().decode())"
    )
    counts = {}
    for entry in project.entries():
        if entry["Service"] == SERVER and entry["State"] == "running":
            text = project.engine.docker("exec", entry["ID"], "python", "-c", fetch)
            counts[entry["Name"]] = sum(
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == ":tensorflow:serving:request_count" and sample.labels["status"] == "OK"
            )
    return counts


def grpc_calls(target: str, image: np.ndarray) -> list[Callable[[], None]]:
    """One Predict call per connection: each channel opens its own HTTP/2 connection to the balancer."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    request.inputs[INPUT].CopyFrom(tf.make_tensor_proto(image))
    payload = request.SerializeToString()
    channels = [
        grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CONNECTIONS)
    ]
    return [functools.partial(channel.unary_unary(PREDICT), payload, timeout=30) for channel in channels]


def rest_calls(url: str, image: np.ndarray) -> list[Callable[[], None]]:
    """One POST per keep-alive connection (a session each)."""
    body = json.dumps({"instances": image.tolist()})
    return [functools.partial(_post, requests.Session(), url, body) for _ in range(CONNECTIONS)]


def _post(session: requests.Session, url: str, body: str) -> None:
    session.post(f"{url}/v1/models/mnist:predict", data=body, timeout=30).raise_for_status()


class Traffic(BackgroundThreads):
    """Each call sent back to back from its own thread until stopped; every failure kept."""

    def __init__(self, calls: list[Callable[[], None]], limit: int | None = None) -> None:
        super().__init__([(call,) for call in calls])
        self.sent = 0
        self.failures: list[str] = []
        self._lock, self._limit = threading.Lock(), limit

    def _run(self, *args: object) -> None:
        (call,) = args
        assert callable(call)
        while not self._stop.is_set():
            with self._lock:
                if self._limit is not None and self.sent >= self._limit:
                    return
                self.sent += 1
            try:
                call()
            except Exception as err:  # any failure at all counts
                self.failures.append(repr(err)[:200])


@pytest.mark.parametrize("api", ["grpc", "rest"])
def test_replicas_share_the_requests_and_one_stopping_or_killed_fails_none(
    replicas: ComposeProject, mnist_test: Split, api: str
) -> None:
    servers = [e for e in replicas.entries() if e["Service"] == SERVER]
    assert len(servers) == REPLICAS and {e["Health"] for e in servers} == {"healthy"}
    image = scale_pixels(mnist_test.images[:1])
    if api == "grpc":
        calls = grpc_calls(replicas.grpc_target, image)
    else:
        calls = rest_calls(replicas.url("REST_PORT"), image)

    before = served_by_each(replicas)
    with Traffic(calls, limit=3000) as traffic:
        wait_for(lambda: traffic.sent >= 3000, 300, "3,000 requests")
    assert traffic.failures == []
    after = served_by_each(replicas)
    assert all(after[name] > before.get(name, 0) for name in after), (before, after)  # every replica served

    stopped = servers[0]["Name"]
    with Traffic(calls) as traffic:
        wait_for(lambda: traffic.sent >= 300, 60, "traffic before the stop")
        replicas.engine.docker("stop", stopped)  # SIGTERM: the replica drains, then exits
        sent_at_stop = traffic.sent
        wait_for(lambda: traffic.sent >= sent_at_stop + 600, 120, "traffic after the stop")
    assert traffic.failures == []
    replicas.engine.docker("start", stopped)
    wait_for(lambda: healthy(replicas, stopped), 90, "the stopped replica to be back")

    killed = servers[1]["Name"]  # dies at once, its connections and calls in flight with it
    with Traffic(calls) as traffic:
        wait_for(lambda: traffic.sent >= 300, 60, "traffic before the kill")
        replicas.engine.docker("kill", killed)
        sent_at_kill = traffic.sent
        wait_for(lambda: traffic.sent >= sent_at_kill + 600, 120, "traffic after the kill")
    assert traffic.failures == []  # each call on it sent again, to the other replica
    replicas.engine.docker("start", killed)  # Docker restarts no container that `docker kill` stopped
    wait_for(lambda: healthy(replicas, killed), 90, "the killed replica to be back")


def healthy(project: ComposeProject, container: str) -> bool:
    return project.inspect(container)["State"].get("Health", {}).get("Status") == "healthy"


def test_the_serving_page_reads_every_replica(replicas: ComposeProject) -> None:
    """The dashboard's monitor, inside its container, finds each replica by the servers' name."""
    (dashboard,) = [e["ID"] for e in replicas.entries() if e["Service"] == "dashboard"]
    read = (
        "import os; from dashboard.monitor import Monitor; "
        "m = Monitor(os.environ['SERVING_METRICS'], 'mnist'); m.read_all(); _, found, _ = m.snapshot(); "
        "print(sum(r.problem is None and r.version is not None for r in found))"
    )
    answering = replicas.engine.docker("exec", dashboard, "python", "-c", read)
    assert int(answering.strip()) == REPLICAS
