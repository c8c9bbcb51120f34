"""Version lifecycle under load: publish, fail, delete; and the server's own stop."""

from __future__ import annotations

import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import ServingClient
from tests.conftest import PredictLoad, ServerProcess, start_server, wait_for


def publish(model_dir: Path, source: Path, version: int) -> None:
    """Copy a version in the way the trainer writes one: beside, then renamed into place."""
    staging = model_dir / f".staging-{version}"
    shutil.copytree(source, staging)
    staging.rename(model_dir / str(version))


@pytest.fixture
def model_dir(trained_model_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "mnist"
    target.mkdir()
    shutil.copytree(trained_model_dir / "mnist" / "1", target / "1")
    return target


def answering_version(server: ServerProcess, image: np.ndarray) -> int:
    """The version named in a gRPC reply: the one that answered."""
    return ServingClient.grpc(server.grpc_target, retries=0).predict(image)[0].version


def test_new_broken_and_deleted_versions_under_load(model_dir: Path, images: np.ndarray) -> None:
    server = start_server(
        "--model_name=mnist",
        f"--model_base_path={model_dir}",
        "--file_system_poll_wait_seconds=1",
        "--max_num_load_retries=0",  # a broken version is given up at once, not retried for minutes
    )
    image = images[0]
    try:
        with PredictLoad(server.grpc_target, image) as load:
            wait_for(lambda: load.answered > 10, 30, "traffic on version 1")
            publish(model_dir, model_dir / "1", 2)
            wait_for(
                lambda: server.model_states() == {2: "AVAILABLE", 1: "END"}, 30, "version 2 to replace 1"
            )
            served_after = load.answered
            wait_for(lambda: load.answered > served_after + 10, 30, "traffic on version 2")

            broken = model_dir / ".staging-3"
            broken.mkdir()
            (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
            broken.rename(model_dir / "3")
            wait_for(lambda: server.model_states().get(3) == "END", 30, "version 3 to fail")
            served_after = load.answered
            wait_for(lambda: load.answered > served_after + 10, 30, "traffic after the failed load")
            failed_load(server, image)

            # Version 2's files removed while its successor is broken: it serves on from memory (TF
            # Serving's AvailabilityPreservingPolicy), until the bad push is taken back and version 1,
            # the newest left, is loaded in its place. No request goes unanswered meanwhile.
            shutil.rmtree(model_dir / "2")
            served_after = load.answered
            wait_for(lambda: load.answered > served_after + 10, 30, "traffic with version 2's files gone")
            assert server.model_states()[2] == "AVAILABLE"
            shutil.rmtree(model_dir / "3")
            wait_for(
                lambda: server.model_states() == {3: "END", 2: "END", 1: "AVAILABLE"},
                30,
                "version 1 to replace 2",
            )
            served_after = load.answered
            wait_for(lambda: load.answered > served_after + 10, 30, "traffic on version 1 again")
        assert load.failures == [] and load.refused == 0
        assert set(load.versions) == {1, 2}  # no request reached the broken version 3
        assert answering_version(server, image) == 1
    finally:
        assert server.stop() == 0


def failed_load(server: ServerProcess, image: np.ndarray) -> None:
    """Version 3's status says why it failed, it is never answered, and version 2 answers instead."""
    status = requests.get(f"{server.rest_url}/v1/models/mnist/versions/3", timeout=5).json()
    (failed,) = status["model_version_status"]
    assert failed["status"]["error_code"] != "OK" and "version 3" in failed["status"]["error_message"]
    refused = requests.post(
        f"{server.rest_url}/v1/models/mnist/versions/3:predict",
        json={"instances": [image.tolist()]},
        timeout=5,
    )
    assert refused.status_code == 404
    assert answering_version(server, image) == 2


def test_sigterm_finishes_cleanly_while_requests_run(model_dir: Path, images: np.ndarray) -> None:
    server = start_server("--model_name=mnist", f"--model_base_path={model_dir}")
    with PredictLoad(server.grpc_target, images[0], clients=2) as load:
        wait_for(lambda: load.answered > 5, 30, "traffic")
        assert server.stop(timeout=10) == 0
    _, stderr = server.process.communicate()
    assert "Traceback" not in stderr
    assert load.failures == []  # requests either got their answer or found the server gone


def test_a_lame_duck_reports_itself_going_away_while_it_still_answers(
    model_dir: Path, images: np.ndarray
) -> None:
    """SERVING_LAME_DUCK_SECONDS: after SIGTERM the model status is 503 (a balancer's health check takes
    the replica out) while predictions are still answered; then the server drains and exits 0."""
    server = start_server(
        "--model_name=mnist", f"--model_base_path={model_dir}", env={"SERVING_LAME_DUCK_SECONDS": "6"}
    )
    client = ServingClient.grpc(server.grpc_target, retries=0)
    status = f"{server.rest_url}/v1/models/mnist"
    assert requests.get(status, timeout=5).status_code == 200
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    wait_for(lambda: requests.get(status, timeout=2).status_code == 503, 3, "the status to say 503")
    assert client.predict(images[:1])[0].version == 1  # still answering
    assert time.monotonic() - signalled < 6  # both seen within the lame-duck period
    assert server.process.wait(20) == 0


def test_a_lame_duck_setting_out_of_range_is_one_line(model_dir: Path) -> None:
    server = start_server(
        "--model_name=mnist",
        f"--model_base_path={model_dir}",
        wait_available=None,
        env={"SERVING_LAME_DUCK_SECONDS": "soon"},
    )
    _, stderr = server.process.communicate(timeout=60)
    assert server.process.returncode == 2 and "SERVING_LAME_DUCK_SECONDS='soon'" in stderr


def health_statuses(server: ServerProcess) -> set[str]:
    """What the gRPC health service says of the server and of its two services; nothing while the
    server is not listening yet."""
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.grpc_target))
    try:
        return {
            health_pb2.HealthCheckResponse.ServingStatus.Name(
                stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
            )
            for service in ("", "ModelService", "PredictionService")
        }
    except grpc.RpcError:
        return set()


def test_grpc_health_turns_serving_once_and_stays(trained_model_dir: Path, tmp_path: Path) -> None:
    """As TF Serving, which opens its ports only once its first models are AVAILABLE, sets SERVING then
    and never changes it: NOT_SERVING before the first version, SERVING after, even with it gone."""
    base = tmp_path / "mnist"
    base.mkdir()
    server = start_server(
        "--model_name=mnist",
        f"--model_base_path={base}",
        "--file_system_poll_wait_seconds=1",
        "--enable_grpc_healthcheck_service",
        wait_available=None,
    )
    try:
        wait_for(lambda: bool(health_statuses(server)), 60, "the gRPC port to open")
        assert health_statuses(server) == {"NOT_SERVING"}
        publish(base, trained_model_dir / "mnist" / "1", 1)
        wait_for(lambda: health_statuses(server) == {"SERVING"}, 60, "SERVING")
        shutil.rmtree(base / "1")
        wait_for(lambda: server.model_states().get(1) == "END", 30, "version 1 to be unloaded")
        assert health_statuses(server) == {"SERVING"}
    finally:
        assert server.stop() == 0


def write_warmup(version: Path, images: np.ndarray, records: int, empty_first: bool = False) -> None:
    """`records` Predict records of one image each, after a record with no request when `empty_first`."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from serving.tensors import to_tensor

    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.model_spec.name = "mnist"
    log.predict_log.request.inputs["images"].CopyFrom(to_tensor(images[:1]))
    with tf.io.TFRecordWriter(str(version / "assets.extra" / "tf_serving_warmup_requests")) as writer:
        if empty_first:
            writer.write(prediction_log_pb2.PredictionLog().SerializeToString())
        for _ in range(records):
            writer.write(log.SerializeToString())


def settled_state(server: ServerProcess) -> str:
    """Version 1's state once its load has ended, one way or the other."""
    wait_for(lambda: server.model_states().get(1) in ("AVAILABLE", "END"), 120, "the load to end")
    return server.model_states()[1]


def test_warm_up_takes_at_most_1000_records_and_skips_empty_ones(
    trained_model_dir: Path, tmp_path: Path, images: np.ndarray
) -> None:
    """TF Serving's limit: 1,000 records load (an empty record is skipped but counted); a 1,001st fails
    the version, as TF Serving fails it."""
    for records, empty_first, state in ((999, True, "AVAILABLE"), (1000, True, "END")):
        base = tmp_path / f"mnist-{records}"
        shutil.copytree(trained_model_dir / "mnist" / "1", base / "1")
        write_warmup(base / "1", images, records, empty_first)
        server = start_server(
            "--model_name=mnist", f"--model_base_path={base}", "--max_num_load_retries=0", wait_available=None
        )
        try:
            assert settled_state(server) == state
            if state == "END":
                (failed,) = ServingClient.rest(server.rest_url).status(version=1)
                assert "Number of warmup records exceeds the maximum (1000)" in failed.error_message
        finally:
            assert server.stop() == 0


def test_the_ports_answer_once_the_versions_found_at_start_have_loaded(
    trained_model_dir: Path, tmp_path: Path, images: np.ndarray
) -> None:
    """As TF Serving, which opens its ports once its first models are AVAILABLE: a request that
    arrives while they load waits for them (in the backlog: the ports are bound at once), where it
    was answered NOT_FOUND (a replica a balancer added as it started failed requests so)."""
    base = tmp_path / "mnist"
    shutil.copytree(trained_model_dir / "mnist" / "1", base / "1")
    write_warmup(base / "1", images, 999, False)  # seconds of warm-up before version 1 is AVAILABLE
    server = start_server("--model_name=mnist", f"--model_base_path={base}", wait_available=None)
    try:
        wait_for(lambda: _takes_connections(server.rest_port), 60, "the REST port to be bound")
        (status,) = ServingClient.rest(server.rest_url, timeout=120, retries=0).status()
        assert status.state == "AVAILABLE"
    finally:
        assert server.stop() == 0


def _takes_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    ("damage", "code", "message"),
    [
        (
            lambda data: data[:-1] + bytes([data[-1] ^ 1]),
            "DATA_LOSS",
            "verify your warmup data is in TFRecord",
        ),
        (
            lambda data: tfrecord_of(b"\xff\xff not a PredictionLog"),
            "INVALID_ARGUMENT",
            "Failed to parse warmup",
        ),
    ],
    ids=["corrupt-file", "not-a-prediction-log"],
)
def test_a_damaged_warm_up_file_fails_its_version_with_tf_servings_code(
    trained_model_dir: Path,
    tmp_path: Path,
    images: np.ndarray,
    damage: Callable[[bytes], bytes],
    code: str,
    message: str,
) -> None:
    """saved_model_warmup_util.cc: a file TensorFlow's record reader finds damaged is DATA_LOSS, a
    record that is not a PredictionLog INVALID_ARGUMENT."""
    base = tmp_path / "mnist"
    shutil.copytree(trained_model_dir / "mnist" / "1", base / "1")
    write_warmup(base / "1", images, 2)
    warmup = base / "1" / "assets.extra" / "tf_serving_warmup_requests"
    warmup.write_bytes(damage(warmup.read_bytes()))
    server = start_server(
        "--model_name=mnist",
        f"--model_base_path={base}",
        "--prefer_tflite_model",
        "--max_num_load_retries=0",
        wait_available=None,
    )
    try:
        assert settled_state(server) == "END"
        (failed,) = ServingClient.rest(server.rest_url).status(version=1)
        assert failed.error_code == code and message in failed.error_message
    finally:
        assert server.stop() == 0


def tfrecord_of(record: bytes) -> bytes:
    """One TFRecord, as TensorFlow's own writer frames it."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "record"
        with tf.io.TFRecordWriter(str(path)) as writer:
            writer.write(record)
        return path.read_bytes()


def retrying_server(base: Path, retries: int, interval_us: int) -> ServerProcess:
    return start_server(
        "--model_name=mnist",
        f"--model_base_path={base}",
        f"--max_num_load_retries={retries}",
        f"--load_retry_interval_micros={interval_us}",
        wait_available=None,
    )


def test_a_version_still_being_copied_loads_on_a_retry_and_a_broken_one_is_given_up(
    trained_model_dir: Path, tmp_path: Path
) -> None:
    """TF Serving's --max_num_load_retries and --load_retry_interval_micros: a failed load is tried again
    while its version is wanted, so a directory copied in place file by file loads once complete; one
    that never loads ends END after the last retry, with one line per failed attempt."""
    base = tmp_path / "mnist"
    (base / "1").mkdir(parents=True)  # copied "in place", not renamed: half of it first
    shutil.copytree(trained_model_dir / "mnist" / "1" / "variables", base / "1" / "variables")
    server = retrying_server(base, retries=100, interval_us=200_000)
    try:
        wait_for(lambda: server.model_states().get(1) == "LOADING", 60, "the first load to fail and wait")
        shutil.copytree(trained_model_dir / "mnist" / "1", base / "1", dirs_exist_ok=True)
        wait_for(lambda: server.model_states().get(1) == "AVAILABLE", 60, "a retry to load the copy")
    finally:
        assert server.stop() == 0

    broken = tmp_path / "broken"
    (broken / "1").mkdir(parents=True)
    server = retrying_server(broken, retries=2, interval_us=100_000)
    try:
        wait_for(lambda: server.model_states().get(1) == "END", 60, "the last retry to fail")
        (status,) = requests.get(f"{server.rest_url}/v1/models/mnist", timeout=5).json()[
            "model_version_status"
        ]
        assert status["status"] == {  # TF Serving's code and words (session_bundle_util.cc:67-77)
            "error_code": "NOT_FOUND",
            "error_message": f"Failed to load mnist version 1 from {broken / '1'}: Specified file path "
            "does not appear to contain a SavedModel bundle (should have a file called `saved_model.pb`)\n"
            f"Specified file path: {broken / '1'}",
        }
    finally:
        assert server.stop() == 0
    log = server.process.communicate()[1]
    assert sum("retrying in 0.1s" in line for line in log.splitlines()) == 2
    assert sum(line.startswith("serving: Failed to load mnist version 1") for line in log.splitlines()) == 3
