"""TF Serving's TFLite path (`--prefer_tflite_model`): a version's `model.tflite` run by LiteRT as TF
Serving's TfLiteSession runs it.

The signatures are the file's `signature_defs_metadata` or TF Serving's mock (serving/tflite_signatures.py),
never the SavedModel's nor the converter's signature table. A call feeds the first subgraph's tensors by
the TensorInfo names, resizing an input whose shape differs from the last call's, and reads the outputs
by name. There are `--num_tflite_pools` interpreters (TF Serving's default: one per core), each on one
thread; a call borrows a free one and waits while all are busy. With `--num_tflite_interpreters_per_pool`
above 1, calls go through TF Serving's in-session batch scheduler first (serving/tflite_scheduler.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import numpy as np
from ai_edge_litert.interpreter import Interpreter

from serving.errors import ServingError, invalid_argument
from serving.tflite_scheduler import TfliteScheduler
from tfquiet import stderr_silenced

if TYPE_CHECKING:
    from tfs_api.tensorflow.core.protobuf import meta_graph_pb2

log = logging.getLogger("serving")


def schedulable_cores() -> int:
    """port::NumSchedulableCPUs: the cores this process may run on (a container's CPU set, say)."""
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class TflitePolicy:
    """--num_tflite_pools and --num_tflite_interpreters_per_pool, with TF Serving's defaults.

    TF Serving makes max(1, pools) interpreters; per pool > 1 adds no interpreter, only a batch scheduler
    in front of them (docs/tf-serving-compat.md)."""

    pools: int = field(default_factory=schedulable_cores)
    interpreters_per_pool: int = 1


class TfliteModel:
    def __init__(self, path: Path, policy: TflitePolicy) -> None:
        """Read the signatures and make every interpreter now: a file that LiteRT cannot read, or whose
        signatures name tensors it lacks, fails the version's load."""
        # Here, not at the top: TensorFlow's protos load TensorFlow, which the flag parser (importing
        # TflitePolicy) must not do before --verbose says whether to silence it.
        from serving.tflite_signatures import session_signatures

        self._content = path.read_bytes()
        # Each idle interpreter with the shape of each input as the last call left it. Made first, as TF
        # Serving builds the model first: a file that is no model fails here, saying so.
        self._idle: queue.SimpleQueue[tuple[Interpreter, dict[int, tuple[int, ...]]]] = queue.SimpleQueue()
        for _ in range(max(1, policy.pools)):
            interpreter, shapes = self._new_interpreter()
            self._idle.put((interpreter, shapes))
        signatures = session_signatures(self._content)
        if signatures.mock:  # TF Serving's own warning, word for word
            log.warning("%s: No signature def found in TFLite model. Generating one.", path)
        self.signature_defs = signatures.signature_defs
        details = interpreter.get_input_details()
        self._inputs = {d["name"]: (d["index"], tuple(int(n) for n in d["shape_signature"])) for d in details}
        self._outputs = {d["name"]: d["index"] for d in interpreter.get_output_details()}
        self._output_kinds = {
            d["name"]: (tuple(int(n) for n in d["shape_signature"]), np.dtype(d["dtype"]))
            for d in interpreter.get_output_details()
        }
        # GetModelBatchSize: a file whose one input's first dimension, as stored, is above 1 executes in
        # batches of that size.
        fixed_batch = int(details[0]["shape"][0]) if len(details) == 1 and details[0]["shape"].size else -1
        self._scheduler = (
            TfliteScheduler(self._invoke, max(1, policy.pools), policy.interpreters_per_pool, fixed_batch)
            if policy.interpreters_per_pool > 1
            else None
        )

    def _new_interpreter(self) -> tuple[Interpreter, dict[int, tuple[int, ...]]]:
        with stderr_silenced():  # applying the XNNPACK delegate, LiteRT announces it on stderr
            interpreter = Interpreter(model_content=self._content, num_threads=1)
            interpreter.allocate_tensors()
        return interpreter, {
            d["index"]: tuple(int(n) for n in d["shape"]) for d in interpreter.get_input_details()
        }

    def __call__(self, key: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output of signature `key` for `inputs` (keyed by alias)."""
        if any(array.ndim and not len(array) for array in inputs.values()):
            return self._empty_answer(key)
        if self._scheduler is not None:
            return self._scheduler(key, inputs)
        return self._invoke(key, inputs)

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.close()

    def _invoke(self, key: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One execution on a free interpreter, by tensor name as TF Serving feeds its TfLiteSession."""
        signature = self.signature_defs[key]
        feeds = [(self._input(signature, alias), array) for alias, array in inputs.items()]
        interpreter, shapes = self._idle.get()
        try:
            for (index, _), array in feeds:
                if shapes[index] != array.shape:
                    shapes[index] = ()  # unknown until the resize has worked
                    interpreter.resize_tensor_input(index, array.shape, strict=False)
                    interpreter.allocate_tensors()
                    shapes[index] = array.shape
                interpreter.set_tensor(index, array)
            interpreter.invoke()
            return {
                alias: interpreter.get_tensor(self._outputs[info.name])
                for alias, info in signature.outputs.items()
            }
        except (ValueError, RuntimeError) as err:
            # LiteRT keeps every error an interpreter has met and repeats them all in the next one's
            # text: a fresh interpreter takes this one's place, and the answer names this error alone.
            with contextlib.suppress(Exception):  # should none be made, the old one serves on
                interpreter, shapes = self._new_interpreter()
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            code = (
                grpc.StatusCode.INVALID_ARGUMENT if isinstance(err, ValueError) else grpc.StatusCode.INTERNAL
            )
            raise ServingError(code, f"Failed to invoke TfLite interpreter: {first}") from None
        finally:
            self._idle.put((interpreter, shapes))

    def _empty_answer(self, key: str) -> dict[str, np.ndarray]:
        """An empty batch answered as TensorFlow answers it, with empty outputs, without touching an
        interpreter (XNNPACK refuses a batch of none)."""
        answer = {}
        for alias, info in self.signature_defs[key].outputs.items():
            shape, dtype = self._output_kinds[info.name]
            if not shape or shape[0] != -1 or any(n < 0 for n in shape[1:]):
                raise invalid_argument(
                    f"an empty batch: output '{alias}' has no batch dimension to answer it with"
                )
            answer[alias] = np.empty((0, *shape[1:]), dtype=dtype)
        return answer

    def _input(self, signature: meta_graph_pb2.SignatureDef, alias: str) -> tuple[int, tuple[int, ...]]:
        return self._inputs[signature.inputs[alias].name]

    def accepting(self, signature: meta_graph_pb2.SignatureDef) -> meta_graph_pb2.SignatureDef:
        """The signature with each input's shape as the interpreter can be resized to take it (the
        file's shape signature, -1 where any size goes), to check requests against: the served one
        may hold the tensors' static dims (TF Serving's mock does), which TF Serving resizes past."""
        accepting = type(signature)()
        accepting.CopyFrom(signature)
        for alias, info in accepting.inputs.items():
            info.tensor_shape.ClearField("dim")
            for size in self._input(signature, alias)[1]:
                info.tensor_shape.dim.add(size=size)
        return accepting
