"""One loaded model version: its SavedModel's signatures (or its model.tflite's), called with numpy tensors.

Requests are checked against the SignatureDef before TensorFlow sees them, so a wrong name, dtype or
shape (or a NaN) is an INVALID_ARGUMENT that names the problem, never an exception from deep inside.
TensorFlow itself is loaded only for a SavedModel (serving.saved_model): a replica whose versions all
run from model.tflite never imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from serving import DEFAULT_SIGNATURE, tensorflow_runtime, tensors, warmup
from serving.batching import Batcher, BatchPolicy
from serving.errors import ServingError, invalid_argument
from serving.in_flight import InFlight
from serving.model_pool import ModelPool
from serving.tflite import TfliteModel, TflitePolicy
from tfs_api.tensorflow.core.protobuf import meta_graph_pb2

TFLITE_FILE = "model.tflite"  # TF Serving's name for a version's TFLite model
# TF Serving's runtime label for Predict, Classify and Regress, whichever session runs them (TFLite too).
RUNTIME = "TF1"


def input_dtypes(signature: meta_graph_pb2.SignatureDef) -> dict[str, np.dtype]:
    """Each input's dtype as numpy names it: all that the JSON encoding needs of a signature. Types no
    JSON value can be (DT_VARIANT, DT_RESOURCE: numpy objects, like strings) become `void`, which
    every JSON value is refused for."""
    dtypes = {}
    for name, info in signature.inputs.items():
        dtype = tensors.dtype_of(info.dtype)
        dtypes[name] = np.dtype(np.void) if dtype is None else dtype.numpy
    return dtypes


def runs_tflite(path: Path, tflite: TflitePolicy | None) -> bool:
    """TF Serving's choice: with --prefer_tflite_model a version that has a model.tflite runs it, and its
    SavedModel is never read."""
    return tflite is not None and (path / TFLITE_FILE).is_file()


def _check_saved_model_directory(path: Path) -> None:
    """Refuse a version directory that holds no SavedModel (still being copied, or a file), in TF
    Serving's code and words (session_bundle/oss/session_bundle_util.cc:55-78), before TensorFlow is
    loaded for it."""
    if (path / "export.meta").exists():
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, "Session Bundle is deprecated and removed.")
    if not any((path / name).is_file() for name in ("saved_model.pb", "saved_model.pbtxt")):
        raise ServingError(
            grpc.StatusCode.NOT_FOUND,
            "Specified file path does not appear to contain a SavedModel bundle (should have a file "
            f"called `saved_model.pb`)\nSpecified file path: {path}",
        )


class Servable:
    """A version that can answer: load it, warm it, call it, and know when no request is using it."""

    def __init__(
        self,
        name: str,
        version: int,
        path: Path,
        pool: ModelPool,
        batching: BatchPolicy | None = None,
        on_batch: Callable[[int], None] = lambda _: None,
        tflite: TflitePolicy | None = None,
    ) -> None:
        """`pool` runs the model calls of requests (not of warm-up, which runs on the loading thread);
        `tflite` set (--prefer_tflite_model): the version's model.tflite, when it has one, answers."""
        self.name, self.version, self.path = name, version, path
        self._model: Callable[[str, dict[str, np.ndarray]], Mapping[str, np.ndarray]]
        self.runtime = RUNTIME
        self.tflite: TfliteModel | None = None
        if runs_tflite(path, tflite):
            assert tflite is not None
            self.tflite = TfliteModel(path / TFLITE_FILE, tflite)
            self.signature_defs, self._model = self.tflite.signature_defs, self.tflite
        else:
            _check_saved_model_directory(path)
            tensorflow_runtime.load()
            from serving.saved_model import SavedModel  # TensorFlow's own classes: loaded now

            saved_model = SavedModel(path)
            self.signature_defs, self._model = saved_model.signature_defs, saved_model
        # What requests are checked against: the served signatures, or for TFLite the shapes its
        # interpreters can be resized to.
        accepting = (
            {key: self.tflite.accepting(signature) for key, signature in self.signature_defs.items()}
            if self.tflite is not None
            else self.signature_defs
        )
        self._accepting = {key: input_specs(signature) for key, signature in accepting.items()}
        self.input_dtypes = {key: input_dtypes(signature) for key, signature in self.signature_defs.items()}
        self._pool = pool
        self._batcher = (
            Batcher(batching, f"{name}-{version}", pool, on_batch) if batching is not None else None
        )
        self.requests = InFlight()  # an unload waits for these

    def close(self) -> None:
        """Stop the batch threads; the model goes with the last reference."""
        if self._batcher is not None:
            self._batcher.close()
        if self.tflite is not None:
            self.tflite.close()

    def has_signature(self, name: str) -> bool:
        return (name or DEFAULT_SIGNATURE) in self.signature_defs

    def signature(self, name: str) -> meta_graph_pb2.SignatureDef:
        key = name or DEFAULT_SIGNATURE
        if key not in self.signature_defs:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.'
            )
        return self.signature_defs[key]

    async def predict(
        self, signature_name: str, inputs: dict[str, np.ndarray], output_filter: Iterable[str] = ()
    ) -> dict[str, np.ndarray]:
        """Run a signature on the model pool, batched when batching is on; `output_filter` names the
        outputs wanted (all when empty)."""
        key, checked, wanted = self._checked_call(signature_name, inputs, output_filter)
        if self._batcher is None:
            return await self._pool.run(lambda: self._call(key, checked, wanted))
        return await self._batcher.run(
            (key, *wanted), checked, lambda merged: self._call(key, merged, wanted)
        )

    def predict_now(
        self, signature_name: str, inputs: dict[str, np.ndarray], output_filter: Iterable[str] = ()
    ) -> dict[str, np.ndarray]:
        """Run a signature on the calling thread: warm-up, before the version serves."""
        key, checked, wanted = self._checked_call(signature_name, inputs, output_filter)
        if self._batcher is None:
            return self._call(key, checked, wanted)
        return self._batcher.run_alone(checked, lambda merged: self._call(key, merged, wanted))

    def _checked_call(
        self, signature_name: str, inputs: dict[str, np.ndarray], output_filter: Iterable[str]
    ) -> tuple[str, dict[str, np.ndarray], list[str]]:
        """The signature key, the inputs checked against it, and the outputs wanted, checked too: the
        outputs first, as TF Serving checks them before the session checks the inputs' dtypes and
        shapes (PreProcessPrediction, then Session::Run: predict_util.cc:103-106,124-146)."""
        key = signature_name or DEFAULT_SIGNATURE
        signature = self.signature(key)
        wanted = list(output_filter) or list(signature.outputs)
        seen: set[str] = set()
        for output in wanted:  # each in turn, as PreProcessPrediction checks them (predict_util.cc:126-146)
            if output not in signature.outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {output} Outputs expected to be in the "
                    f"set {{{','.join(sorted(signature.outputs))}}}."
                )
            if output in seen:
                raise invalid_argument(f"duplicate output tensor alias: {output}")
            seen.add(output)
        return key, check_inputs(self._accepting[key], inputs), wanted

    def _call(self, key: str, inputs: dict[str, np.ndarray], wanted: list[str]) -> dict[str, np.ndarray]:
        try:
            results = self._model(key, inputs)
        except ValueError as err:  # LiteRT's word for a tensor it cannot take
            raise invalid_argument(str(err)) from None
        return {name: results[name] for name in wanted}

    def warm_up(self, iterations: int = 1, observe: warmup.WarmupObserver = lambda *_: None) -> int:
        """Replay the version's warm-up requests (serving/warmup.py), each `iterations` times, before it
        serves; a failing one fails the load. Returns the number of records."""
        return warmup.replay(self, iterations, observe)


@dataclass(frozen=True)
class InputSpec:
    """One signature input as requests are checked against it: read from its TensorInfo once a load,
    not from the proto on every request."""

    dtype: np.dtype | None  # None: a dtype no request tensor can carry
    dtype_name: str
    dims: tuple[int, ...] | None  # None: unknown rank
    finite: bool  # floating point: NaN and infinities are refused

    @classmethod
    def of(cls, info: meta_graph_pb2.TensorInfo) -> InputSpec:
        want = tensors.dtype_of(info.dtype)
        shape = info.tensor_shape
        return cls(
            dtype=None if want is None else want.numpy,
            dtype_name=tensors.dtype_name(info.dtype),
            dims=None if shape.unknown_rank else tuple(d.size for d in shape.dim),
            finite=want is not None and want.name.startswith(("float", "bfloat")),
        )


def input_specs(signature: meta_graph_pb2.SignatureDef) -> dict[str, InputSpec]:
    return {name: InputSpec.of(info) for name, info in signature.inputs.items()}


def check_inputs(specs: Mapping[str, InputSpec], inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inputs, each matching its TensorInfo in name, dtype and shape, and finite when floating."""
    expected = set(specs)
    if set(inputs) != expected:
        missing, extra = sorted(expected - set(inputs)), sorted(set(inputs) - expected)
        problem = ", ".join(
            f"{word} {names}" for word, names in (("missing", missing), ("unexpected", extra)) if names
        )
        raise invalid_argument(
            f"input names do not match the signature: {problem}; expected exactly {sorted(expected)}"
        )
    checked = {}
    batch_sizes = set()
    for name, array in inputs.items():
        spec = specs[name]
        if spec.dtype is None or array.dtype != spec.dtype:
            given = "string" if array.dtype == np.dtype(object) else array.dtype.name
            raise invalid_argument(f"input '{name}' has dtype {given}, expected {spec.dtype_name}")
        dims = spec.dims
        if dims is not None and (
            array.ndim != len(dims) or any(d >= 0 and d != n for d, n in zip(dims, array.shape, strict=True))
        ):
            shape = "[" + ",".join(str(d) for d in dims) + "]"
            raise invalid_argument(f"input '{name}' has shape {list(array.shape)}, expected {shape}")
        if spec.finite and not np.isfinite(array).all():
            raise invalid_argument(f"input '{name}' holds NaN or infinite values")
        if array.ndim:
            batch_sizes.add(array.shape[0])
        checked[name] = array
    if len(batch_sizes) > 1:
        raise invalid_argument(f"inputs disagree on the batch size: {sorted(batch_sizes)}")
    return checked
