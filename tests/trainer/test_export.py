"""Export as DESIGN.md fixes it: numbered versions renamed into place, the signature, the artefacts."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import DATA_DIR, QUICK_TRAIN_ARGS, ROOT, run_trainer
from tfquiet import import_tensorflow
from trainer.data import load_mnist

import_tensorflow()
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import prediction_log_pb2  # noqa: E402

from contract import model_dir  # noqa: E402
from contract.model_dir import versions  # noqa: E402
from contract.signature import (  # noqa: E402
    IMAGE_SHAPE,
    INPUT,
    SIGNATURE_NAME,
    scale_pixels,  # noqa: E402
)
from serving.saved_model import read_signature_defs  # noqa: E402
from serving.tflite_signatures import session_signatures, subgraph_tensors  # noqa: E402
from trainer import export  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.errors import ExportError  # noqa: E402
from trainer.model import build_model  # noqa: E402

HISTORY_KEYS = {"loss", "accuracy", "recall", "val_loss", "val_accuracy", "val_recall", "best_epoch"}
METRICS_KEYS = {"loss", "accuracy", "recall", "confusion_matrix", "per_class", "misclassified"}
CARD_KEYS = {
    "architecture",
    "hyperparameters",
    "seed",
    "data_sha256",
    "train_size",
    "val_size",
    "wall_time_s",
    "tensorflow_version",
    "created_at",
}


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_first_run_exports_version_1_with_the_design_signature(trained_model_dir: Path) -> None:
    version = trained_model_dir / "mnist" / "1"
    assert versions(trained_model_dir / "mnist") == [1]
    assert {"saved_model.pb", "variables", "fingerprint.pb", "model.tflite", "assets.extra"} <= {
        p.name for p in version.iterdir()
    }
    signature = tf.saved_model.load(str(version)).signatures["serving_default"]
    (inputs,) = signature.structured_input_signature[1].values()
    assert list(signature.structured_input_signature[1]) == ["images"]
    assert inputs.dtype == tf.float32 and inputs.shape.as_list() == [None, 28, 28, 1]
    outputs = signature.structured_outputs
    assert set(outputs) == {"probabilities", "classes"}
    assert outputs["probabilities"].dtype == tf.float32 and outputs["probabilities"].shape.as_list() == [
        None,
        10,
    ]
    assert outputs["classes"].dtype == tf.int64 and outputs["classes"].shape.as_list() == [None]


def test_artefacts_have_the_documented_keys(trained_model_dir: Path) -> None:
    extra = trained_model_dir / "mnist" / "1" / "assets.extra"
    history = read_json(extra / "history.json")
    assert set(history) >= HISTORY_KEYS and len(history["loss"]) == 2 and history["best_epoch"] in (1, 2)
    metrics = read_json(extra / "metrics.json")
    assert set(metrics) >= METRICS_KEYS
    confusion = np.array(metrics["confusion_matrix"])
    assert confusion.shape == (10, 10) and confusion.sum() == 10000
    assert abs(np.trace(confusion) / 10000 - metrics["accuracy"]) < 1e-6
    assert metrics["accuracy"] > 0.8  # trained on 2,700 images for two epochs
    assert len(metrics["misclassified"]) == 10000 - np.trace(confusion)
    first = metrics["misclassified"][0]
    assert first["label"] != first["predicted"] and len(base64.b64decode(first["pixels"])) == 28 * 28
    confidences = [m["confidence"] for m in metrics["misclassified"]]
    assert confidences == sorted(confidences, reverse=True)
    assert [c["digit"] for c in metrics["per_class"]] == list(range(10))
    assert {"precision", "recall", "f1"} <= set(metrics["per_class"][0])
    card = read_json(extra / "model_card.json")
    assert set(card) >= CARD_KEYS and card["architecture"] == "seed" and card["train_size"] == 2700
    assert card["data_sha256"]["train-images-idx3-ubyte.gz"].startswith("ba891046")


def test_warmup_file_holds_predict_requests_for_the_signature(trained_model_dir: Path) -> None:
    records = tf.data.TFRecordDataset(
        str(trained_model_dir / "mnist" / "1" / model_dir.ASSETS_EXTRA / model_dir.WARMUP_FILE)
    )
    sizes = []
    for raw in records:
        log = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
        request = log.predict_log.request
        assert request.model_spec.signature_name == SIGNATURE_NAME
        sizes.append(tf.make_ndarray(request.inputs[INPUT]).shape)
    assert sizes == [(n, *IMAGE_SHAPE) for n in export.WARMUP_BATCH_SIZES]


def test_progress_record_ends_done_with_the_version(trained_model_dir: Path) -> None:
    (record,) = (trained_model_dir / "mnist" / ".runs").glob("*/progress.json")
    progress = read_json(record)
    assert progress["state"] == "done" and progress["version"] == 1
    assert progress["epoch"] == progress["planned_epochs"] == 2 and len(progress["history"]["val_loss"]) == 2


def test_second_run_exports_version_2(tmp_path: Path) -> None:
    for expected in (1, 2):
        result = run_trainer(*QUICK_TRAIN_ARGS, "--epochs", "1", "--model-dir", str(tmp_path))
        assert result.returncode == 0, result.stderr
        assert f"exported mnist version {expected} (seed)" in result.stdout
    assert versions(tmp_path / "mnist") == [1, 2]
    assert not list((tmp_path / "mnist").glob(".staging-*"))
    # The same seed and data give the same training, bit for bit.
    first, second = (read_json(tmp_path / "mnist" / v / "assets.extra" / "history.json") for v in ("1", "2"))
    assert first["loss"] == second["loss"] and first["val_loss"] == second["val_loss"]


def exported(
    model: Any, base: Path, images: np.ndarray | None = None, artefacts: dict[str, Any] | None = None
) -> tuple[int, Path]:
    """Stage `model` as the trainer does and publish it: (version, its directory)."""
    warmup = np.zeros((1, 28, 28, 1)) if images is None else images
    with export.staged_version(model, base, "mnist", artefacts or {}, warmup, "test") as staged:
        return model_dir.publish(staged, base)


def test_exported_signature_answers_as_the_keras_model(tmp_path: Path) -> None:
    data = load_mnist(DATA_DIR, 0.1, seed=0, limit=200)
    model = build_model("seed")
    model.compile("adam", "categorical_crossentropy")
    images = scale_pixels(data.test.images[:50])
    version, path = exported(model, tmp_path, images)
    served = tf.saved_model.load(str(path)).signatures["serving_default"](images=tf.constant(images))
    expected = model.predict(images, verbose=0)
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(served["classes"].numpy(), expected.argmax(axis=1))


def test_interrupted_export_leaves_no_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "_write_warmup", interrupt)
    model = build_model(TrainConfig.for_arch("seed").arch)
    with pytest.raises(KeyboardInterrupt):
        exported(model, tmp_path, artefacts={"history": {}})
    assert list(tmp_path.iterdir()) == []


def test_model_tflite_agrees_with_the_savedmodel(trained_model_dir: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    version = trained_model_dir / "mnist" / "1"
    images = scale_pixels(load_mnist(DATA_DIR, 0.1, 0).test.images[:32])
    runner = Interpreter(str(version / model_dir.TFLITE_FILE)).get_signature_runner(SIGNATURE_NAME)
    saved = tf.saved_model.load(str(version)).signatures[SIGNATURE_NAME](**{INPUT: tf.constant(images)})
    np.testing.assert_allclose(
        runner(**{INPUT: images})["probabilities"],
        saved["probabilities"].numpy(),
        atol=export.TFLITE_TOLERANCE,
    )


def test_a_tflite_conversion_that_disagrees_exports_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export, "TFLITE_TOLERANCE", -1.0)  # no conversion can agree this closely
    model = build_model("seed")
    with pytest.raises(ExportError, match="disagrees with the SavedModel"):
        exported(model, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_model_tflite_carries_the_savedmodels_signature_as_tf_serving_reads_it(
    trained_model_dir: Path,
) -> None:
    """TF Serving's --prefer_tflite_model serves only the file's signature_defs_metadata: it must be the
    SavedModel's serving_default, with tensor names the file has, and every warm-up record must fit it."""
    version = trained_model_dir / "mnist" / "1"
    served = session_signatures((version / model_dir.TFLITE_FILE).read_bytes())
    assert not served.mock and set(served.signature_defs) == {SIGNATURE_NAME}
    lite, saved = served.signature_defs[SIGNATURE_NAME], read_signature_defs(version)[SIGNATURE_NAME]
    assert lite.method_name == saved.method_name == "tensorflow/serving/predict"
    for lite_infos, saved_infos in ((lite.inputs, saved.inputs), (lite.outputs, saved.outputs)):
        assert set(lite_infos) == set(saved_infos)
        for alias, info in lite_infos.items():
            assert info.dtype == saved_infos[alias].dtype
            assert info.tensor_shape == saved_infos[alias].tensor_shape  # -1 batch: batches of any size
    inputs, outputs = subgraph_tensors((version / model_dir.TFLITE_FILE).read_bytes())
    assert {i.name for i in lite.inputs.values()} == {t.name for t in inputs}  # names as written, no fixing
    assert {i.name for i in lite.outputs.values()} == {t.name for t in outputs}
    records = tf.data.TFRecordDataset(str(version / model_dir.ASSETS_EXTRA / model_dir.WARMUP_FILE))
    for raw in records:
        request = prediction_log_pb2.PredictionLog.FromString(raw.numpy()).predict_log.request
        assert set(request.inputs) == set(lite.inputs)
        assert set(request.output_filter) <= set(lite.outputs)


def test_a_model_tflite_without_signature_metadata_exports_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the metadata TF Serving makes up a signature the warm-up records do not fit: the real
    image would never load the version, so the trainer publishes none."""
    monkeypatch.setattr(export, "_with_signature_defs", lambda content, _staging: content)
    model = build_model("seed")
    with pytest.raises(ExportError, match=r"would not serve: warm-up request 0 .*serving_default_images"):
        exported(model, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_skip_if_trained_trains_again_over_a_version_without_signature_metadata(
    trained_model_dir: Path, tmp_path: Path
) -> None:
    """A version exported before model.tflite carried its signatures cannot be served by TF Serving's
    TFLite path: the compose trainer's --skip-if-trained trains a version that can."""
    from tests.serving.test_tflite import without_signature_metadata

    base = tmp_path / "mnist"
    tflite = base / "1" / model_dir.TFLITE_FILE
    shutil.copytree(trained_model_dir / "mnist" / "1", base / "1")
    result = run_trainer(
        *QUICK_TRAIN_ARGS, "--epochs", "1", "--model-dir", str(tmp_path), "--skip-if-trained"
    )
    assert result.returncode == 0 and "not training" in result.stdout, result.stderr
    tflite.write_bytes(without_signature_metadata(tflite.read_bytes()))
    result = run_trainer(
        *QUICK_TRAIN_ARGS, "--epochs", "1", "--model-dir", str(tmp_path), "--skip-if-trained"
    )
    assert result.returncode == 0, result.stderr
    assert "predates model.tflite's signature metadata" in result.stdout
    assert versions(base) == [1, 2]


def test_a_version_without_tflite_signatures_is_stale_for_make_up_too(
    trained_model_dir: Path, tmp_path: Path
) -> None:
    """make up trains over a version TF Serving's TFLite path cannot serve, as the compose trainer does."""
    from contract.tflite_metadata import predates_tflite_signatures
    from serving.tflite_signatures import METADATA_NAME
    from stack.__main__ import parse_args, prepare
    from tests.conftest import free_port
    from tests.serving.test_tflite import without_signature_metadata

    assert model_dir.TFLITE_SIGNATURES == METADATA_NAME  # one name, in the contract and in the server
    version = tmp_path / "mnist" / "1"
    shutil.copytree(trained_model_dir / "mnist" / "1", version)
    ports = [f"--{door}-port={free_port()}" for door in ("grpc", "rest", "dashboard")]
    args = parse_args(["--model-dir", str(tmp_path), *ports])
    assert not predates_tflite_signatures(version) and prepare(args)[2] is False
    tflite = version / model_dir.TFLITE_FILE
    tflite.write_bytes(without_signature_metadata(tflite.read_bytes()))
    assert predates_tflite_signatures(version) and prepare(args)[2] is True
    tflite.write_bytes(b"not a flatbuffer")
    assert predates_tflite_signatures(version)
    tflite.unlink()  # a SavedModel alone: served from it
    assert not predates_tflite_signatures(version)


def test_a_file_named_like_the_next_version_is_stepped_over(tmp_path: Path) -> None:
    (tmp_path / "1").write_text("not a version, but a rename onto it would fail")
    model = build_model("seed")
    version, path = exported(model, tmp_path)
    assert version == 2 and (path / "saved_model.pb").exists()


def test_the_trainer_imports_nothing_of_the_servers_front_doors() -> None:
    """The trainer image installs the `trainer` group only: the parts of the server it loads versions
    with must not reach for the REST door's packages (an ImportError there failed the compose trainer)."""
    blocked = ("orjson", "simdjson", "uvicorn", "uvloop", "httptools", "grpc_health")
    code = f"import sys; sys.modules.update(dict.fromkeys({blocked!r})); import trainer.cli, trainer.export"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_an_interrupt_once_the_version_is_published_keeps_it_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C the instant the rename is done: the version stays, the run is recorded done, and the
    interrupt comes out as InterruptedAfterExport naming it (the command then says it was exported)."""
    from trainer import pipeline
    from trainer.errors import InterruptedAfterExport

    publish = model_dir.publish

    def publish_then_interrupt(staged: Path, base: Path) -> tuple[int, Path]:
        published = publish(staged, base)
        os.kill(os.getpid(), signal.SIGINT)
        return published

    monkeypatch.setattr(model_dir, "publish", publish_then_interrupt)
    config = TrainConfig.for_arch("seed", epochs=1, limit=200, model_dir=tmp_path)
    data = load_mnist(DATA_DIR, 0.1, seed=0, limit=200)
    with pytest.raises(InterruptedAfterExport) as raised:
        pipeline.run(config, data, None, 10)
    base = tmp_path / "mnist"
    assert raised.value.version == 1 and model_dir.versions(base) == [1]
    (record,) = base.glob(".runs/*/progress.json")
    assert json.loads(record.read_text())["state"] == "done"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C works as before again


def test_an_interrupt_swallowed_while_the_version_is_written_still_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while TensorFlow writes the SavedModel can land in one of its __del__ methods, where
    Python drops the KeyboardInterrupt: the run went on and published. The handler's note stops it."""
    import contextlib

    from trainer import pipeline
    from trainer.errors import INTERRUPT_REQUESTED

    written = pipeline.staged_version

    @contextlib.contextmanager
    def swallowed(*args: Any) -> Iterator[Path]:
        with written(*args) as staged:
            INTERRUPT_REQUESTED.set()  # as the handler does, its exception lost in a __del__
            yield staged

    monkeypatch.setattr(pipeline, "staged_version", swallowed)
    config = TrainConfig.for_arch("seed", epochs=1, limit=200, model_dir=tmp_path)
    data = load_mnist(DATA_DIR, 0.1, seed=0, limit=200)
    try:
        with pytest.raises(KeyboardInterrupt) as raised:
            pipeline.run(config, data, None, 10)
    finally:
        INTERRUPT_REQUESTED.clear()
    base = tmp_path / "mnist"
    assert type(raised.value) is KeyboardInterrupt and model_dir.versions(base) == []
    assert not list(base.glob(".staging*"))
    (record,) = base.glob(".runs/*/progress.json")
    assert json.loads(record.read_text())["state"] == "failed"
