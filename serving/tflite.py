"""TF Serving's TFLite path (`--prefer_tflite_model`): a version's `model.tflite` run by LiteRT.

As in TF Serving, the signatures are the .tflite file's own: a signature that did not convert (one that
parses tf.Examples, say) is not there, and its SignatureDefs are built from the interpreter's tensors.
An interpreter runs one call at a time, so each version holds `pools x interpreters_per_pool` of them
(TF Serving's `--num_tflite_pools` and `--num_tflite_interpreters_per_pool`) and a call borrows one.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from tensorflow.core.protobuf import meta_graph_pb2

from serving.settings import TflitePolicy
from tfquiet import stderr_silenced

RUNTIME = "TFLite"  # TF Serving's runtime label for it


class TfliteModel:
    def __init__(self, path: Path, policy: TflitePolicy) -> None:
        """Load every interpreter now: a file that LiteRT cannot read fails the version's load."""
        self._idle: queue.SimpleQueue[dict[str, Callable[..., dict[str, np.ndarray]]]] = queue.SimpleQueue()
        content = path.read_bytes()
        for _ in range(policy.pools * policy.interpreters_per_pool):
            interpreter = Interpreter(model_content=content, num_threads=1)
            with stderr_silenced():  # applying the XNNPACK delegate, LiteRT announces it on stderr
                interpreter.allocate_tensors()
            runners = {key: interpreter.get_signature_runner(key) for key in interpreter.get_signature_list()}
            self._idle.put(runners)
        first = self._idle.get()
        self.signature_defs = {key: _signature_def(runner) for key, runner in first.items()}
        self._idle.put(first)

    def __call__(self, key: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        runners = self._idle.get()
        try:
            return runners[key](**inputs)
        finally:
            self._idle.put(runners)


def _signature_def(runner: Any) -> meta_graph_pb2.SignatureDef:
    """A SignatureDef from a signature runner's tensors; a dimension the model leaves open is -1."""
    signature = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    for infos, details in (
        (signature.inputs, runner.get_input_details()),
        (signature.outputs, runner.get_output_details()),
    ):
        for name, detail in details.items():
            info = infos[name]
            info.name = detail["name"]
            info.dtype = tf.dtypes.as_dtype(detail["dtype"]).as_datatype_enum
            for size in detail["shape_signature"]:
                info.tensor_shape.dim.add(size=int(size))
    return signature
