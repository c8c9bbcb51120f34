"""A version's SavedModel, run by TensorFlow: the only part of the server that needs TensorFlow, so it
is imported only when a version that does not run from model.tflite loads (serving.servable)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from serving.errors import ServingError, invalid_argument


def read_signature_defs(path: Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The SignatureDefs of the `serve` MetaGraph, exactly as saved_model.pb holds them; a file that
    does not parse is DATA_LOSS, as TensorFlow's ReadBinaryProto words it."""
    file = path / "saved_model.pb"
    try:
        saved_model = saved_model_pb2.SavedModel.FromString(file.read_bytes())
    except DecodeError:
        raise ServingError(grpc.StatusCode.DATA_LOSS, f"Can't parse {file} as binary proto") from None
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ValueError(f"{path}: no MetaGraph tagged 'serve'")


class SavedModel:
    """The `serve` signatures of a SavedModel, called with and answering numpy arrays."""

    def __init__(self, path: Path) -> None:
        self.signature_defs = read_signature_defs(path)
        self._functions = dict(tf.saved_model.load(str(path), tags=["serve"]).signatures)

    def __call__(self, key: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        function = self._functions.get(key)
        if function is None:  # __saved_model_init_op: a SignatureDef naming an op to run, not a function
            raise invalid_argument(f"signature {key} names no tensors to compute: it cannot be run")
        try:
            outputs = function(**{k: tf.constant(v) for k, v in inputs.items()})
        except tf.errors.InvalidArgumentError as err:
            raise invalid_argument(session_words(err.message)) from None
        return {name: _to_numpy(tensor) for name, tensor in outputs.items()}


# What TensorFlow's Python adds round an op's error: a header naming where the node was defined, and
# the function that ran. TF Serving runs the graph from C++ and sends the op's own words alone.
_PYTHON_HEADER = re.compile(
    r"\AGraph execution error:\n\nDetected at node [^\n]* defined at \(most recent call last\):\n"
    r"<stack traces unavailable>\n"
)
_FUNCTION_SUFFIX = re.compile(r" \[Op:[^\]\n]*\]\Z")


def session_words(message: str) -> str:
    """A model's run error as TensorFlow's C++ session words it: `Could not parse example input, value:
    'x'\n\t [[{{node ParseExample/ParseExampleV2}}]]`, without Python's header and the function's name."""
    return _FUNCTION_SUFFIX.sub("", _PYTHON_HEADER.sub("", message))


def _to_numpy(tensor: tf.Tensor) -> np.ndarray:
    """The tensor as an ndarray at every rank: `.numpy()` of a scalar is a numpy scalar, or plain
    `bytes` for a string, which the output encoders cannot take (`bytes` has no dtype)."""
    return np.asarray(tensor.numpy(), dtype=object if tensor.dtype == tf.string else None)
