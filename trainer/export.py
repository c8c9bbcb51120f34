"""Write one model version into the model directory the way DESIGN.md fixes it.

Everything is written into a dot-named staging directory beside the versions and renamed into place
when complete, so TF Serving (which loads numeric directories only) never sees half a version.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

SIGNATURE_NAME = "serving_default"
INPUT_NAME = "images"
# A second signature for TF Serving's Classify API: tf.Examples whose `image` feature holds the
# 784 pixels (row-major, in [0, 1]).
CLASSIFY_SIGNATURE_NAME = "classify"
EXAMPLE_FEATURE = "image"
WARMUP_FILE = "tf_serving_warmup_requests"
# Small enough for any sensible max_batch_size: TF Serving fails a load whose warm-up is over it.
WARMUP_BATCH_SIZES = (1, 8)


def _serving_archive(model: keras.Model) -> keras.export.ExportArchive:
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = model(images, training=False)
        return {"probabilities": probabilities, "classes": tf.argmax(probabilities, axis=1)}

    def classify(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        # TF Serving's Classify API: serialized tf.Examples in, per-class labels and scores out.
        features = tf.io.parse_example(
            inputs, {EXAMPLE_FEATURE: tf.io.FixedLenFeature([28 * 28], tf.float32)}
        )
        scores = model(tf.reshape(features[EXAMPLE_FEATURE], [-1, 28, 28, 1]), training=False)
        labels = tf.constant([[str(digit) for digit in range(10)]])
        return {"classes": tf.tile(labels, [tf.shape(scores)[0], 1]), "scores": scores}

    archive.add_endpoint(
        name=SIGNATURE_NAME,
        fn=serve,
        input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32, name=INPUT_NAME)],
    )
    archive.add_endpoint(
        name=CLASSIFY_SIGNATURE_NAME,
        fn=classify,
        input_signature=[tf.TensorSpec([None], tf.string, name="inputs")],
    )
    return archive


def _write_warmup(path: Path, model_name: str, images: np.ndarray) -> None:
    """TF Serving's warm-up file: PredictionLogs replayed against a version before it takes traffic."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for size in WARMUP_BATCH_SIZES:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=SIGNATURE_NAME)
            )
            batch = np.resize(images, (size, 28, 28, 1)).astype(np.float32)
            request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(batch))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def export_version(
    model: keras.Model,
    base_path: Path,
    model_name: str,
    artefacts: dict[str, dict[str, Any]],
    warmup_images: np.ndarray,
    staging_name: str,
) -> tuple[int, Path]:
    """Export `model` as version max+1 with `artefacts` as `assets.extra/<name>.json`.

    Returns the version and its directory. On any failure, Ctrl-C included, the staging directory is
    removed and no numeric directory is left.
    """
    staging = base_path / f".staging-{staging_name}"
    try:
        _serving_archive(model).write_out(str(staging), verbose=False)
        extra = staging / "assets.extra"
        extra.mkdir()
        for name, content in artefacts.items():
            (extra / f"{name}.json").write_text(json.dumps(content, indent=1))
        _write_warmup(extra / WARMUP_FILE, model_name, warmup_images)
        return _rename_into_place(staging, base_path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _rename_into_place(staging: Path, base_path: Path) -> tuple[int, Path]:
    """Take the next free version number; another trainer may take one at the same moment."""
    while True:
        # Every numeric name counts, files too: a rename onto one would fail again and again.
        taken = [int(p.name) for p in base_path.iterdir() if p.name.isascii() and p.name.isdigit()]
        version = max(taken, default=0) + 1
        target = base_path / str(version)
        try:
            os.rename(staging, target)  # fails if `target` appeared since we looked
        except OSError:
            if target.exists():
                continue
            raise
        return version, target
