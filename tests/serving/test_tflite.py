"""TF Serving's TFLite path, against real server processes: `--prefer_tflite_model` answers from a
version's model.tflite as the SavedModel would, falls back to the SavedModel without one, and a corrupt
one fails only its own version."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from client import ServingClient, ServingClientError
from tests.conftest import ServerProcess, start_server, wait_for

TFLITE = ("--prefer_tflite_model", "--num_tflite_pools=2")


@pytest.fixture
def monitoring(tmp_path: Path) -> str:
    config = tmp_path / "monitoring.config"
    config.write_text('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n')
    return f"--monitoring_config_file={config}"


def runtimes(server: ServerProcess) -> set[str]:
    """The runtime labels TF Serving's runtime-latency histogram has seen."""
    text = requests.get(f"{server.rest_url}/monitoring/prometheus/metrics", timeout=5).text
    return {
        sample.labels["runtime"]
        for family in text_string_to_metric_families(text)
        if family.name == ":tensorflow:serving:runtime_latency"
        for sample in family.samples
    }


def copy_version(source: Path, base: Path, version: int) -> Path:
    target = base / str(version)
    shutil.copytree(source, target)
    return target


def test_the_tflite_runtime_answers_as_the_savedmodel_over_both_apis(
    trained_model_dir: Path, images: np.ndarray, in_process: dict[str, np.ndarray], monitoring: str
) -> None:
    version = trained_model_dir / "mnist" / "1"
    assert (version / "model.tflite").is_file()  # the trainer writes one into every version
    server = start_server("--model_name=mnist", f"--model_base_path={version.parent}", monitoring, *TFLITE)
    try:
        for client in (ServingClient.grpc(server.grpc_target), ServingClient.rest(server.rest_url)):
            answers = client.predict(images)
            probabilities = np.array([answer.probabilities for answer in answers])
            np.testing.assert_allclose(probabilities, in_process["probabilities"], atol=1e-5)
        assert runtimes(server) == {"TFLite"}
        # As in TF Serving, the signatures are the .tflite file's: `classify` did not convert.
        signatures = ServingClient.rest(server.rest_url).metadata()["metadata"]["signature_def"]
        assert set(signatures["signature_def"]) == {"serving_default"}
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
        assert runtimes(server) == {"TF1"}
    finally:
        assert server.stop() == 0


def test_a_corrupt_model_tflite_fails_its_version_and_the_previous_keeps_serving(
    trained_model_dir: Path, tmp_path: Path, images: np.ndarray
) -> None:
    base = tmp_path / "mnist"
    copy_version(trained_model_dir / "mnist" / "1", base, 1)
    server = start_server(
        "--model_name=mnist", f"--model_base_path={base}", "--file_system_poll_wait_seconds=0.2", *TFLITE
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
