"""ServingClient against the real server process: both transports, the same answers, clear errors."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest

from client import ServingClient, ServingClientError, normalise_bytes
from client.api import Transport
from contract.signature import scale_pixels
from tests.client.conftest import encode, photo_of
from tests.conftest import ROOT, ServerProcess, free_port
from trainer.data import Split


@pytest.fixture(scope="module")
def clients(server: ServerProcess) -> dict[str, ServingClient]:
    return {"grpc": ServingClient.grpc(server.grpc_target), "rest": ServingClient.rest(server.rest_url)}


def test_grpc_and_rest_give_the_same_answers(clients: dict[str, ServingClient], mnist_test: Split) -> None:
    images = scale_pixels(mnist_test.images[:16])
    over_grpc, over_rest = clients["grpc"].predict(images), clients["rest"].predict(images)
    assert [p.digit for p in over_grpc] == [p.digit for p in over_rest]
    np.testing.assert_allclose(
        [p.probabilities for p in over_grpc], [p.probabilities for p in over_rest], rtol=1e-5
    )
    assert {p.version for p in over_grpc + over_rest} == {1}
    assert sum(p.digit == label for p, label in zip(over_grpc, mnist_test.labels[:16], strict=True)) >= 12


def test_a_photographed_digit_round_trips_to_its_class(
    clients: dict[str, ServingClient], mnist_test: Split
) -> None:
    direct = clients["grpc"].predict(scale_pixels(mnist_test.images[:20]))
    right = [i for i, p in enumerate(direct) if p.digit == mnist_test.labels[i]][:5]
    for index in right:
        upload = encode(photo_of(mnist_test.images[index], light_slope=60, noise=6), "JPEG")
        (answer,) = clients["grpc"].predict(normalise_bytes(upload).tensor)
        assert answer.digit == mnist_test.labels[index]


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_status_metadata_and_errors(clients: dict[str, ServingClient], transport: str) -> None:
    client = clients[transport]
    (status,) = client.status()
    assert (status.version, status.state, status.error_code) == (1, "AVAILABLE", "OK")
    signature = client.metadata()["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert set(signature["inputs"]) == {"images"}
    with pytest.raises(ServingClientError) as raised:
        client.predict(np.zeros((28, 28)), model="nope")
    assert raised.value.status == "NOT_FOUND" and "Latest(nope)" in raised.value.message
    with pytest.raises(ServingClientError) as raised:
        client.predict(np.zeros((28, 28)), label="canary")
    assert raised.value.status == "INVALID_ARGUMENT"
    with pytest.raises(ValueError, match="expected 28x28"):
        client.predict(np.zeros((32, 32)))
    with pytest.raises(ValueError, match=r"from 0 to 255, expected ink in \[0, 1\] \(8-bit pixels: divide"):
        client.predict(np.arange(784).reshape(28, 28) % 256)
    with pytest.raises(ValueError, match="NaN or infinite"):
        client.predict(np.full((28, 28), np.nan))
    assert client.predict([]) == [] and client.predict(np.zeros((0, 28, 28))) == []


@pytest.mark.parametrize("make", [ServingClient.grpc, ServingClient.rest])
def test_unreachable_server_is_retried_then_unavailable(make: Callable[..., ServingClient]) -> None:
    port = free_port()
    target = f"127.0.0.1:{port}" if make == ServingClient.grpc else f"http://127.0.0.1:{port}"
    client = make(target, retries=1, backoff=0.01, timeout=2)
    with pytest.raises(ServingClientError) as raised:
        client.predict(np.zeros((28, 28)))
    assert raised.value.status == "UNAVAILABLE"


def test_an_unreachable_ipv6_address_is_written_as_typed() -> None:
    """gRPC reports the addresses it tried percent-encoded (ipv6:%5B::1%5D:port); the client's error
    gives them back as a person writes them."""
    port = free_port()
    client = ServingClient.grpc(f"[::1]:{port}", retries=0, timeout=2)
    with pytest.raises(ServingClientError) as raised:
        client.status()
    assert raised.value.status == "UNAVAILABLE"
    assert f"[::1]:{port}" in raised.value.message and "%5B" not in raised.value.message


class FlakyTransport(Transport):
    """Fails its first `failures` predictions with `status`, then answers; counts every call."""

    def __init__(self, failures: int, error: str = "UNAVAILABLE") -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def predict(
        self, images: np.ndarray, model: str, version: int | None, label: str | None, timeout: float
    ) -> tuple[np.ndarray, int]:
        self.calls += 1
        if self.calls <= self.failures:
            raise ServingClientError(self.error, "from the fake")
        return np.eye(10, dtype=np.float32)[[3] * len(images)], 7


@pytest.mark.fast
@pytest.mark.parametrize("status", ["UNAVAILABLE", "RESOURCE_EXHAUSTED"])
@pytest.mark.parametrize(("failures", "calls", "answered"), [(0, 1, True), (2, 3, True), (3, 3, False)])
def test_transient_failures_are_tried_again_up_to_the_retries(
    status: str, failures: int, calls: int, answered: bool
) -> None:
    """A server down or restarting, or one whose request budget is full for now (429 at once)."""
    transport = FlakyTransport(failures, status)
    client = ServingClient(transport, retries=2, backoff=0.001)
    if answered:
        assert [(p.digit, p.version) for p in client.predict(np.zeros((2, 28, 28)))] == [(3, 7), (3, 7)]
    else:
        with pytest.raises(ServingClientError, match=status):
            client.predict(np.zeros((28, 28)))
    assert transport.calls == calls


@pytest.mark.fast
def test_other_errors_are_not_retried() -> None:
    transport = FlakyTransport(1, "INVALID_ARGUMENT")
    with pytest.raises(ServingClientError, match="INVALID_ARGUMENT"):
        ServingClient(transport, retries=3, backoff=0.001).predict(np.zeros((28, 28)))
    assert transport.calls == 1


def test_the_grpc_client_loads_without_importing_tensorflow() -> None:
    """The serving API's protos (tfs_api) load without TensorFlow's own import (seconds of CPU);
    TensorFlow imported later in the same process still works, with the same message classes."""
    script = """
import sys
from client import ServingClient
from tfs_api.tensorflow_serving.apis import predict_pb2
ServingClient.grpc("localhost:1")
assert "tensorflow" not in sys.modules and "keras" not in sys.modules, "TensorFlow was imported"
request = predict_pb2.PredictRequest()
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
request.inputs["images"].CopyFrom(tf.make_tensor_proto([[0.5, 1.0]]))
assert type(request.inputs["images"]) is tensor_pb2.TensorProto
assert tf.make_ndarray(request.inputs["images"]).tolist() == [[0.5, 1.0]]
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
