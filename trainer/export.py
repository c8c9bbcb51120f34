"""Write one model version into the model directory the way DESIGN.md fixes it.

Everything is written into a dot-named staging directory beside the versions and renamed into place
when complete, so TF Serving (which loads numeric directories only) never sees half a version.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from contract import model_dir
from contract.signature import (
    CLASSES,
    CLASSIFY_INPUT,
    CLASSIFY_SIGNATURE_NAME,
    DIGITS,
    EXAMPLE_FEATURE,
    IMAGE_SHAPE,
    INPUT,
    PROBABILITIES,
    SIGNATURE_NAME,
)
from serving.errors import ServingError
from serving.model_pool import ModelPool
from serving.saved_model import read_signature_defs
from serving.servable import Servable
from serving.tflite import TflitePolicy
from serving.tflite_signatures import write_signature_defs
from tfquiet import stderr_silenced
from tfs_api.tensorflow.core.protobuf import meta_graph_pb2
from tfs_api.tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
from trainer.errors import ExportError

PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
# How far LiteRT's probabilities may stray from the SavedModel's before model.tflite (and so the version)
# is refused: float32 kernels that differ in summation order stay within about 1e-7 here.
TFLITE_TOLERANCE = 1e-5
# Small enough for any sensible max_batch_size: TF Serving fails a load whose warm-up is over it.
WARMUP_BATCH_SIZES = (1, 8)


def _serving_archive(model: keras.Model) -> keras.export.ExportArchive:
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = model(images, training=False)
        return {PROBABILITIES: probabilities, CLASSES: tf.argmax(probabilities, axis=1)}

    def classify(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        # TF Serving's Classify API: serialized tf.Examples in, per-class labels and scores out.
        features = tf.io.parse_example(inputs, {EXAMPLE_FEATURE: tf.io.FixedLenFeature([PIXELS], tf.float32)})
        scores = model(tf.reshape(features[EXAMPLE_FEATURE], [-1, *IMAGE_SHAPE]), training=False)
        labels = tf.constant([[str(digit) for digit in DIGITS]])
        return {"classes": tf.tile(labels, [tf.shape(scores)[0], 1]), "scores": scores}

    archive.add_endpoint(
        name=SIGNATURE_NAME,
        fn=serve,
        input_signature=[tf.TensorSpec([None, *IMAGE_SHAPE], tf.float32, name=INPUT)],
    )
    archive.add_endpoint(
        name=CLASSIFY_SIGNATURE_NAME,
        fn=classify,
        input_signature=[tf.TensorSpec([None], tf.string, name=CLASSIFY_INPUT)],
    )
    return archive


def _write_warmup(path: Path, model_name: str, images: np.ndarray) -> None:
    """TF Serving's warm-up file: PredictionLogs replayed against a version before it takes traffic."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for size in WARMUP_BATCH_SIZES:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=SIGNATURE_NAME)
            )
            batch = np.resize(images, (size, *IMAGE_SHAPE)).astype(np.float32)
            request.inputs[INPUT].CopyFrom(tf.make_tensor_proto(batch))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


@contextlib.contextmanager
def staged_version(
    model: keras.Model,
    base_path: Path,
    model_name: str,
    artefacts: dict[str, dict[str, Any]],
    warmup_images: np.ndarray,
    staging_name: str,
) -> Iterator[Path]:
    """`model` written whole into a staging directory beside the versions, with `artefacts` as
    `assets.extra/<name>.json`, for the caller to publish (model_dir.publish) as the next version.

    On any failure before the publish, Ctrl-C included, the staging directory is removed and no
    numeric directory is left; TensorFlow's own write errors (a full disk) are an ExportError.
    """
    with model_dir.staging(base_path, staging_name) as staging:
        try:
            _serving_archive(model).write_out(str(staging), verbose=False)
        except tf.errors.OpError as err:
            raise ExportError(
                f"cannot write the version under {base_path}: {plain_tf_error(err.message)}"
            ) from None
        extra = staging / model_dir.ASSETS_EXTRA
        extra.mkdir()
        for name, content in artefacts.items():
            (extra / f"{name}.json").write_text(json.dumps(content, indent=1))
        _write_warmup(extra / model_dir.WARMUP_FILE, model_name, warmup_images)
        _write_tflite(staging, model_name, warmup_images.astype(np.float32))
        yield staging


def _write_tflite(staging: Path, model_name: str, check_images: np.ndarray) -> None:
    """`serving_default` converted for LiteRT, with the SavedModel's SignatureDef in the file's
    `signature_defs_metadata`: TF Serving's --prefer_tflite_model serves only what that entry says and
    never reads saved_model.pb. `classify` stays SavedModel-only: parsing tf.Examples does not convert."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(staging), signature_keys=[SIGNATURE_NAME])
    content = converter.convert()
    try:
        tagged = _with_signature_defs(content, staging)
    except Exception as err:
        raise ExportError(f"cannot write model.tflite's signatures: {err}; no version exported") from None
    (staging / model_dir.TFLITE_FILE).write_bytes(tagged)
    _check_as_served(staging, model_name, check_images)


def _with_signature_defs(content: bytes, staging: Path) -> bytes:
    """The file with the SavedModel's `serving_default` in its metadata, each TensorInfo naming the
    .tflite tensor that the converter bound to the same alias."""
    from ai_edge_litert.interpreter import Interpreter

    with stderr_silenced():  # applying the XNNPACK delegate, LiteRT announces it on stderr
        runner = Interpreter(model_content=content).get_signature_runner(SIGNATURE_NAME)
    signature = meta_graph_pb2.SignatureDef()
    signature.CopyFrom(read_signature_defs(staging)[SIGNATURE_NAME])
    for infos, details in (
        (signature.inputs, runner.get_input_details()),
        (signature.outputs, runner.get_output_details()),
    ):
        for alias, info in infos.items():
            info.name = details[alias]["name"]
    return write_signature_defs(content, {SIGNATURE_NAME: signature})


def _check_as_served(staging: Path, model_name: str, check_images: np.ndarray) -> None:
    """Load the staged version as the model server does with --prefer_tflite_model, by TF Serving's
    rules: signatures from model.tflite alone, the warm-up records replayed against them, and the
    probabilities within TFLITE_TOLERANCE of the SavedModel's. Anything else and no version is exported."""
    pool = ModelPool(threads=1, max_waiting=1)
    servable = None
    try:
        servable = Servable(model_name, 0, staging, pool, tflite=TflitePolicy(pools=1))
        servable.warm_up()
        expected = read_signature_defs(staging)[SIGNATURE_NAME]
        served = servable.signature_defs.get(SIGNATURE_NAME)
        if served is None or _interface(served) != _interface(expected):
            raise ExportError(
                f"model.tflite would serve {_interface(served) if served else 'no serving_default'}, not the "
                f"SavedModel's {_interface(expected)}: no version exported"
            )
        lite = servable.predict_now(SIGNATURE_NAME, {INPUT: check_images})
    except ExportError:
        raise
    except Exception as err:  # LiteRT's own errors too: the version is not published, whatever failed
        message = err.message if isinstance(err, ServingError) else str(err)
        raise ExportError(f"model.tflite would not serve: {message}; no version exported") from None
    finally:
        if servable is not None:
            servable.close()
        pool.shutdown()
    saved = tf.saved_model.load(str(staging)).signatures[SIGNATURE_NAME](**{INPUT: tf.constant(check_images)})
    worst = float(np.abs(lite[PROBABILITIES] - saved[PROBABILITIES].numpy()).max())
    if worst > TFLITE_TOLERANCE:
        raise ExportError(
            f"the LiteRT conversion disagrees with the SavedModel by {worst:.2g} "
            f"(over {TFLITE_TOLERANCE:g}): no version exported"
        )


def _interface(signature: meta_graph_pb2.SignatureDef) -> tuple[object, ...]:
    """A signature's aliases, dtypes and shapes: what a client sees of it (tensor names aside)."""

    def tensors(infos: Any) -> list[tuple[str, int, list[int]]]:
        return sorted((alias, i.dtype, [d.size for d in i.tensor_shape.dim]) for alias, i in infos.items())

    return signature.method_name, tensors(signature.inputs), tensors(signature.outputs)


def plain_tf_error(message: str) -> str:
    """A TensorFlow error's first line without the op's wrapping: `{{function_node ...}} PATH; No space
    left on device [Op:SaveV2]` is `PATH; No space left on device`."""
    line = message.splitlines()[0] if message else "unknown error"
    return re.sub(r"\s*\[Op:\w+\]$", "", re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", line))
