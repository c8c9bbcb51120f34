"""serving/warmup.py on the trainer's real SavedModel, in process: every kind of record TF Serving
replays (saved_model_warmup.cc:39-78) runs through the checks a client's request meets, each
`iterations` times, and a record that would fail as a request fails the load."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from serving.errors import ServingError
from serving.model_pool import ModelPool
from serving.servable import Servable
from serving.warmup import WARMUP_FILE


@pytest.fixture
def version(trained_model_dir: Path, tmp_path: Path) -> Path:
    """A copy of the trained version, its warm-up file left for each test to write."""
    target = tmp_path / "1"
    shutil.copytree(trained_model_dir / "mnist" / "1", target)
    return target


@pytest.fixture
def pool() -> Iterator[ModelPool]:
    pool = ModelPool(threads=1, max_waiting=4)
    yield pool
    pool.shutdown()


def write_warmup(version: Path, *logs: prediction_log_pb2.PredictionLog) -> None:
    with tf.io.TFRecordWriter(str(version / WARMUP_FILE)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())


def with_examples(request: Any, images: np.ndarray) -> None:
    """The images as tf.Examples, the `classify` signature's input."""
    for image in images:
        example = request.input.example_list.examples.add()
        example.features.feature["image"].float_list.value.extend(image.ravel().tolist())


def predict_log(images: np.ndarray) -> prediction_log_pb2.PredictionLog:
    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.model_spec.name = "mnist"
    log.predict_log.request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
    return log


def classify_log(images: np.ndarray) -> prediction_log_pb2.PredictionLog:
    log = prediction_log_pb2.PredictionLog()
    log.classify_log.request.model_spec.signature_name = "classify"
    with_examples(log.classify_log.request, images)
    return log


def multi_inference_log(images: np.ndarray) -> prediction_log_pb2.PredictionLog:
    log = prediction_log_pb2.PredictionLog()
    request = log.multi_inference_log.request
    task = request.tasks.add(method_name="tensorflow/serving/classify")
    task.model_spec.name, task.model_spec.signature_name = "warm", "classify"
    with_examples(request, images)
    return log


def regress_log(images: np.ndarray) -> prediction_log_pb2.PredictionLog:
    log = prediction_log_pb2.PredictionLog()
    log.regress_log.request.model_spec.signature_name = "classify"  # two outputs: not a regression
    with_examples(log.regress_log.request, images)
    return log


def counting_runs(servable: Servable, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The signature of every model call the servable makes from now on."""
    called: list[str] = []
    run = servable.predict_now

    def counted(signature_name: str, *args: Any) -> dict[str, np.ndarray]:
        called.append(signature_name or "serving_default")
        return run(signature_name, *args)

    monkeypatch.setattr(servable, "predict_now", counted)
    return called


def test_every_kind_of_request_tf_serving_replays_is_replayed_each_iteration(
    version: Path, pool: ModelPool, images: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Predict, Classify and MultiInference records (TF Serving also replays Regress ones; the trainer's
    model has no regression signature), an empty record skipped but counted, each record three times
    (--num_request_iterations_for_warmup=3)."""
    write_warmup(
        version,
        predict_log(images[:2]),
        classify_log(images[:3]),
        prediction_log_pb2.PredictionLog(),
        multi_inference_log(images[:1]),
    )
    servable = Servable("mnist", 1, version, pool)
    called = counting_runs(servable, monkeypatch)

    assert servable.warm_up(iterations=3) == 4
    assert called == ["serving_default"] * 3 + ["classify"] * 6


@pytest.mark.parametrize(
    ("log", "code", "message"),
    [
        (regress_log, grpc.StatusCode.INVALID_ARGUMENT, "Expected one output Tensor."),
        (
            lambda images: prediction_log_pb2.PredictionLog(
                session_run_log=prediction_log_pb2.SessionRunLog()
            ),
            grpc.StatusCode.UNIMPLEMENTED,
            "Unsupported log_type for warmup: 5",
        ),
        (
            lambda images: prediction_log_pb2.PredictionLog(
                predict_streamed_log=prediction_log_pb2.PredictStreamedLog()
            ),
            grpc.StatusCode.UNIMPLEMENTED,
            "Unsupported log_type for warmup: 7",
        ),
    ],
    ids=["regress-on-a-classification-signature", "session-run", "predict-streamed"],
)
def test_a_record_tf_serving_would_refuse_fails_the_load_in_its_words(
    version: Path,
    pool: ModelPool,
    images: np.ndarray,
    log: Any,
    code: grpc.StatusCode,
    message: str,
) -> None:
    """The record after a good one fails the warm-up, naming the record and TF Serving's reason."""
    write_warmup(version, predict_log(images[:1]), log(images[:1]))
    servable = Servable("mnist", 1, version, pool)
    with pytest.raises(ServingError) as failed:
        servable.warm_up()
    assert failed.value.code == code
    assert failed.value.message.startswith(f"warm-up request 1 of {version / WARMUP_FILE} failed: ")
    assert failed.value.message.endswith(message)


def test_a_predict_record_naming_an_input_the_signature_lacks_fails_as_a_request_does(
    version: Path, pool: ModelPool, images: np.ndarray
) -> None:
    log = predict_log(images[:1])
    log.predict_log.request.inputs["pixels"].CopyFrom(tf.make_tensor_proto(images[:1]))
    write_warmup(version, log)
    servable = Servable("mnist", 1, version, pool)
    with pytest.raises(ServingError) as failed:
        servable.warm_up()
    assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Sent extra: {pixels}" in failed.value.message


def test_warm_up_is_reported_as_tf_servings_metrics_report_it(
    version: Path, pool: ModelPool, images: np.ndarray
) -> None:
    """saved_model_warmup_util.cc:209-214: a file read to its end is reported OK with its records, a
    damaged one with DATA_LOSS; a record that fails returns before anything is reported."""
    heard: list[tuple[Path, int, str]] = []

    def observe(path: Path, seconds: float, records: int, status: str) -> None:
        assert seconds >= 0
        heard.append((path, records, status))

    write_warmup(version, predict_log(images[:1]), prediction_log_pb2.PredictionLog())
    servable = Servable("mnist", 1, version, pool)
    servable.warm_up(observe=observe)
    warmup_file = version / WARMUP_FILE
    warmup_file.write_bytes(warmup_file.read_bytes()[:-1])  # the last record cut short
    with pytest.raises(ServingError):
        servable.warm_up(observe=observe)
    write_warmup(version, regress_log(images[:1]))
    with pytest.raises(ServingError):
        servable.warm_up(observe=observe)
    assert [(path, records) for path, records, _ in heard] == [(version, 2), (version, 1)]
    assert heard[0][2] == "OK" and heard[1][2].startswith("DATA_LOSS: ")
