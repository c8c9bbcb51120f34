"""TF Serving's TFLite path, against real server processes: with `--prefer_tflite_model` a version's
model.tflite answers with the signatures its `signature_defs_metadata` holds (never the SavedModel's), a
file without that entry gets TF Serving's mock signature (and so fails the trainer's warm-up), a version
without model.tflite is served from its SavedModel, and a corrupt one fails only its own version."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from ai_edge_litert import schema_py_generated as schema
from flatbuffers import Builder
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from client import ServingClient, ServingClientError
from serving.tensors import to_tensor
from serving.tflite_signatures import METADATA_NAME
from tests.conftest import ServerProcess, start_server, wait_for

TFLITE = ("--prefer_tflite_model", "--num_tflite_pools=2")


@pytest.fixture
def monitoring(tmp_path: Path) -> str:
    config = tmp_path / "monitoring.config"
    config.write_text('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n')
    return f"--monitoring_config_file={config}"


def samples(server: ServerProcess, metric: str) -> list[dict[str, str]]:
    """The label sets of a metric's samples on the server's Prometheus page."""
    text = requests.get(f"{server.rest_url}/monitoring/prometheus/metrics", timeout=5).text
    return [
        sample.labels
        for family in text_string_to_metric_families(text)
        if family.name == metric
        for sample in family.samples
    ]


def tensorflow_loaded(server: ServerProcess) -> bool:
    """Whether TensorFlow's shared library is mapped into the server's process."""
    return "_pywrap_tensorflow_internal" in Path(f"/proc/{server.process.pid}/maps").read_text()


def resident_mib(server: ServerProcess) -> float:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


def copy_version(source: Path, base: Path, version: int) -> Path:
    target = base / str(version)
    shutil.copytree(source, target)
    return target


def without_signature_metadata(content: bytes) -> bytes:
    """The file as the TFLite converter writes it, before the trainer adds `signature_defs_metadata`."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    model.metadata = [m for m in model.metadata if m.name != METADATA_NAME.encode()]
    builder = Builder(len(content))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_the_tflite_runtime_answers_as_the_savedmodel_over_both_apis(
    trained_model_dir: Path, images: np.ndarray, in_process: dict[str, np.ndarray], monitoring: str
) -> None:
    version = trained_model_dir / "mnist" / "1"
    assert (version / "model.tflite").is_file()  # the trainer writes one into every version
    server = start_server("--model_name=mnist", f"--model_base_path={version.parent}", monitoring, *TFLITE)
    try:
        for client in (ServingClient.grpc(server.grpc_target), ServingClient.rest(server.rest_url)):
            for batch in (images, images[:1], images[:3]):  # the interpreters resize to each batch
                answers = client.predict(batch)
                probabilities = np.array([answer.probabilities for answer in answers])
                np.testing.assert_allclose(
                    probabilities, in_process["probabilities"][: len(batch)], atol=1e-5
                )
        # The signatures are the file's metadata, tensor names and all: `classify` did not convert.
        signatures = ServingClient.rest(server.rest_url).metadata()["metadata"]["signature_def"][
            "signature_def"
        ]
        assert set(signatures) == {"serving_default"}
        assert signatures["serving_default"]["inputs"]["images"]["name"] == "serving_default_images:0"
        # As TF Serving labels it, whichever session ran the call; and no SavedModel was loaded.
        assert {s["runtime"] for s in samples(server, ":tensorflow:serving:runtime_latency")} == {"TF1"}
        assert samples(server, ":tensorflow:cc:saved_model:load_attempt_count") == []
        # Every version runs from model.tflite: TensorFlow never loaded, a fraction of its memory.
        assert not tensorflow_loaded(server)
        assert resident_mib(server) <= 300, f"{resident_mib(server):.0f} MiB"
    finally:
        assert server.stop() == 0


def test_a_version_without_model_tflite_is_served_from_its_savedmodel(
    trained_model_dir: Path,
    tmp_path: Path,
    images: np.ndarray,
    in_process: dict[str, np.ndarray],
    monitoring: str,
) -> None:
    base = tmp_path / "mnist"
    (copy_version(trained_model_dir / "mnist" / "1", base, 1) / "model.tflite").unlink()
    server = start_server("--model_name=mnist", f"--model_base_path={base}", monitoring, *TFLITE)
    try:
        answers = ServingClient.grpc(server.grpc_target).predict(images)
        np.testing.assert_allclose(
            [answer.probabilities for answer in answers], in_process["probabilities"], atol=1e-6
        )
        signatures = ServingClient.rest(server.rest_url).metadata()["metadata"]["signature_def"][
            "signature_def"
        ]
        assert {"serving_default", "classify"} <= set(signatures)  # the SavedModel's
        (load,) = samples(server, ":tensorflow:cc:saved_model:load_attempt_count")
        assert load["status"] == "success"
        assert tensorflow_loaded(server)  # for the SavedModel, and only for it
    finally:
        assert server.stop() == 0


def test_a_model_tflite_without_signature_metadata_gets_tf_servings_mock_signature(
    trained_model_dir: Path, tmp_path: Path, images: np.ndarray
) -> None:
    """No `signature_defs_metadata`: TF Serving serves a `serving_default` made from the raw tensors, so
    the warm-up records (which send `images`) fail and the version never becomes AVAILABLE, with the
    reason in one line. Without warm-up it loads, and answers only to the mock's names."""
    base = tmp_path / "mnist"
    tflite = copy_version(trained_model_dir / "mnist" / "1", base, 1) / "model.tflite"
    tflite.write_bytes(without_signature_metadata(tflite.read_bytes()))
    server = start_server(
        "--model_name=mnist",
        f"--model_base_path={base}",
        "--max_num_load_retries=0",
        *TFLITE,
        wait_available=None,
    )
    try:
        wait_for(lambda: server.model_states().get(1) == "END", 60, "version 1 to fail")
        (failed,) = ServingClient.rest(server.rest_url).status(version=1)
        assert (
            "warm-up request 0" in failed.error_message and "serving_default_images" in failed.error_message
        )
    finally:
        server.stop()
    log = server.process.communicate()[1]
    assert "No signature def found in TFLite model. Generating one." in log
    assert sum("Failed to load mnist version 1" in line for line in log.splitlines()) == 1

    server = start_server(
        "--model_name=mnist", f"--model_base_path={base}", "--enable_model_warmup=false", *TFLITE
    )
    try:
        (signature,) = (
            ServingClient.rest(server.rest_url)
            .metadata()["metadata"]["signature_def"]["signature_def"]
            .values()
        )
        assert set(signature["inputs"]) == {"serving_default_images"}
        assert set(signature["outputs"]) == {"StatefulPartitionedCall_1"}  # two outputs, one key
        assert [d["size"] for d in signature["inputs"]["serving_default_images"]["tensor_shape"]["dim"]] == [
            "1",
            "28",
            "28",
            "1",
        ]
        with pytest.raises(ServingClientError, match="INVALID_ARGUMENT"):
            ServingClient.grpc(server.grpc_target, retries=0).predict(images)  # sends `images`
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.grpc_target))
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mnist"
        request.inputs["serving_default_images"].CopyFrom(to_tensor(images))
        reply = stub.Predict(request, timeout=30)
        assert set(reply.outputs) == {"StatefulPartitionedCall_1"}
        assert [d.size for d in reply.outputs["StatefulPartitionedCall_1"].tensor_shape.dim] == [
            len(images),
            10,
        ]
        request.output_filter.append("probabilities")
        with pytest.raises(grpc.RpcError, match="output tensor alias not found"):
            stub.Predict(request, timeout=30)
    finally:
        assert server.stop() == 0


def test_a_corrupt_model_tflite_fails_its_version_and_the_previous_keeps_serving(
    trained_model_dir: Path, tmp_path: Path, images: np.ndarray
) -> None:
    base = tmp_path / "mnist"
    copy_version(trained_model_dir / "mnist" / "1", base, 1)
    server = start_server(
        "--model_name=mnist",
        f"--model_base_path={base}",
        "--file_system_poll_wait_seconds=1",
        "--max_num_load_retries=0",
        *TFLITE,
    )
    try:
        staging = base / ".staging-2"  # published as the trainer does: complete, then renamed
        shutil.copytree(trained_model_dir / "mnist" / "1", staging)
        (staging / "model.tflite").write_bytes(b"TFL3 but not a model")
        staging.rename(base / "2")
        wait_for(lambda: server.model_states().get(2) == "END", 30, "version 2 to fail")
        (failed,) = ServingClient.rest(server.rest_url).status(version=2)
        assert failed.error_code != "OK" and "version 2" in failed.error_message
        assert server.model_states()[1] == "AVAILABLE"
        assert ServingClient.grpc(server.grpc_target).predict(images[:1])[0].version == 1
        with pytest.raises(ServingClientError, match="NOT_FOUND"):
            ServingClient.grpc(server.grpc_target, retries=0).predict(images[:1], version=2)
    finally:
        assert server.stop() == 0


def test_interpreters_per_pool_puts_tf_servings_batch_scheduler_in_the_session(
    trained_model_dir: Path, images: np.ndarray, in_process: dict[str, np.ndarray]
) -> None:
    """--num_tflite_interpreters_per_pool=2 on one interpreter: calls from many clients at once are
    queued, merged and split back with the same answers; a call of more than 500 rows is refused, as
    TF Serving's in-session scheduler refuses it."""
    base = trained_model_dir / "mnist"
    server = start_server(
        "--model_name=mnist",
        f"--model_base_path={base}",
        "--prefer_tflite_model",
        "--num_tflite_pools=1",
        "--num_tflite_interpreters_per_pool=2",
    )
    try:
        client = ServingClient.grpc(server.grpc_target)
        with ThreadPoolExecutor(8) as clients:
            batches = [images[i % 8 : i % 8 + 1 + i % 3] for i in range(32)]
            for batch, answers in zip(batches, clients.map(client.predict, batches), strict=True):
                start = next(i for i in range(8) if np.array_equal(images[i], batch[0]))
                expected = in_process["probabilities"][start : start + len(batch)]
                np.testing.assert_allclose([a.probabilities for a in answers], expected, atol=1e-5)
        with pytest.raises(
            ServingClientError, match="Task size 501 is larger than maximum input batch size 500"
        ):
            ServingClient.grpc(server.grpc_target, retries=0).predict(
                np.resize(images, (501, *images.shape[1:]))
            )
    finally:
        assert server.stop() == 0


def test_an_empty_batch_gets_an_empty_answer_without_touching_an_interpreter(
    trained_model_dir: Path, images: np.ndarray
) -> None:
    """As TensorFlow answers a SavedModel's empty batch; LiteRT's XNNPACK would refuse it, and each
    refusal would carry every earlier one's text into the next answer and the log."""
    server = start_server("--model_name=mnist", f"--model_base_path={trained_model_dir / 'mnist'}", *TFLITE)
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.grpc_target))
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mnist"
        request.inputs["images"].CopyFrom(to_tensor(images[:0]))
        for _ in range(200):
            reply = stub.Predict(request, timeout=30)
        assert [d.size for d in reply.outputs["probabilities"].tensor_shape.dim] == [0, 10]
        assert [d.size for d in reply.outputs["classes"].tensor_shape.dim] == [0]
        assert len(ServingClient.grpc(server.grpc_target).predict(images[:2])) == 2  # and it still answers
    finally:
        assert server.stop() == 0
    assert server.process.communicate()[1].count("\n") <= 2  # the two "API at" lines: nothing per request
