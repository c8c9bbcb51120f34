"""REST request bodies to what the model needs, without one large body stalling the whole server.

Parsing JSON holds the GIL: a 48 MB Predict body of numbers took orjson and numpy 4.8 s and twenty
times its size in Python objects, and meanwhile nothing else on the event loop (gRPC's requests too)
was answered. Bodies up to IN_LOOP_BYTES are still parsed on the loop, in a few milliseconds. Larger
ones go to a process of their own (`JsonParsing`). Either way simdjson reads a dense numeric tensor
straight into an array: a tenth of the time for a large body, and for a single 28x28 image 30 against
182 us, a quarter of the server's CPU per REST request. Anything else (strings, ragged lists, objects
per row, errors to word) is read the general way, with Python objects, only up to GENERAL_BYTES.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import grpc
import numpy as np
import simdjson

from serving import DEFAULT_SIGNATURE, rest_json
from serving.errors import ServingError, invalid_argument

IN_LOOP_BYTES = 256 << 10  # parsed on the event loop: about 15 ms at most
GENERAL_BYTES = 16 << 20  # read with Python objects (about 20 bytes each per body byte) up to this

Result = TypeVar("Result")


@dataclass(frozen=True)
class PredictInputs:
    signature_name: str  # as the body gives it: "" for the default
    row_format: bool  # "instances" (answered with "predictions"), not "inputs"
    arrays: dict[str, np.ndarray] | None  # None when no model was there to read them for


def predict_inputs(body: bytes, signatures: Mapping[str, rest_json.InputDtypes] | None) -> PredictInputs:
    """The body's input arrays for the signature it names, refused in TF Serving's order: the document
    and its signature name first, then the signature, then the tensors. `signatures` None: the model the
    request names is not served, and only the document and signature name are checked (the caller then
    says why, before anything about the tensors, as TF Serving looks the model up before them)."""
    dense = _dense_inputs(body, signatures)
    if dense is not None:
        return dense
    if len(body) > GENERAL_BYTES:
        raise invalid_argument(
            f"a request body over {GENERAL_BYTES} bytes must be an object of dense numeric tensors "
            "(strings, ragged lists and objects per instance are read in smaller bodies only)"
        )
    document = rest_json.parse_predict_document(body)
    if signatures is None:
        return PredictInputs(document.signature_name, "instances" in document.document, None)
    inputs = _signature_inputs(signatures, document.signature_name)
    parsed = rest_json.predict_body(document)
    return PredictInputs(parsed.signature_name, parsed.row_format, rest_json.to_input_arrays(parsed, inputs))


def _signature_inputs(
    signatures: Mapping[str, rest_json.InputDtypes], signature_name: str
) -> rest_json.InputDtypes:
    key = signature_name or DEFAULT_SIGNATURE
    if key not in signatures:
        raise invalid_argument(f'Serving signature name: "{key}" not found in signature def')
    if not signatures[key]:  # such as __saved_model_init_op, which names an op to run, not tensors
        raise invalid_argument(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    return signatures[key]


def _dense_inputs(
    body: bytes, signatures: Mapping[str, rest_json.InputDtypes] | None
) -> PredictInputs | None:
    """The inputs when the body is an object whose tensors are all dense arrays of numbers for numeric
    inputs; None for any other body, which the general reader takes (and words the refusal of)."""
    try:
        document = simdjson.Parser().parse(body)
    except (ValueError, RuntimeError) as err:  # simdjson's words; RapidJSON's need the general reader
        if len(body) <= GENERAL_BYTES:
            return None
        raise invalid_argument(f"JSON Parse error: {err}") from None
    if not isinstance(document, simdjson.Object) or (("instances" in document) == ("inputs" in document)):
        return None
    row_format = "instances" in document
    signature_name = document.get("signature_name", "")
    if not isinstance(signature_name, str):
        return None
    if signatures is None:
        return PredictInputs(signature_name, row_format, None)
    inputs = _signature_inputs(signatures, signature_name)
    value = document["instances" if row_format else "inputs"]
    if not row_format and isinstance(value, simdjson.Object):
        columns = {name: value[name] for name in inputs if name in value}  # other keys are ignored
    elif len(inputs) == 1:
        columns = {name: value for name in inputs}
    else:
        return None
    # A one-input body's brackets and commas may be its array's (see _is_rectangular); a body of several
    # inputs holds the others' too.
    whole = body if len(inputs) == 1 else None
    arrays = {}
    for name, dtype in inputs.items():
        array = _dense_array(name, columns.get(name), dtype, whole)
        if array is None:
            return None
        arrays[name] = array
    return PredictInputs(signature_name, row_format, arrays)


def _dense_array(name: str, value: Any, dtype: np.dtype, whole: bytes | None) -> np.ndarray | None:
    """A nested JSON array of numbers as an array of `dtype`, read without a Python object per number;
    None unless it is non-empty, rectangular, and of numbers that kind of dtype takes. `whole`: the body
    around it, when the body's structure may be the array's own."""
    if not isinstance(value, simdjson.Array) or dtype.kind not in "fiu":
        return None
    shape: list[int] = []
    first: Any = value
    while isinstance(first, simdjson.Array) and len(shape) <= rest_json.MAX_RANK:
        shape.append(len(first))
        first = first[0] if len(first) else None
    if not math.prod(shape) or len(shape) > rest_json.MAX_RANK:
        return None
    try:
        flat = _numbers(value, dtype)
    except (TypeError, ValueError, RuntimeError):  # a string, bool, null or object; a number out of range
        return None
    if flat.size != math.prod(shape) or not _is_rectangular(value, shape, whole):
        return None
    if dtype.kind == "f":
        return rest_json.to_float(name, flat.reshape(shape), dtype)
    return rest_json.checked_integers(name, flat.reshape(shape), dtype)


def _numbers(value: simdjson.Array, dtype: np.dtype) -> np.ndarray:
    """Every number of the nested array, flattened: as float64 for a floating-point input (JSON integers
    too, as numpy takes them), else as int64, or uint64 where int64 cannot hold them."""
    if dtype.kind == "f":
        return np.frombuffer(value.as_buffer(of_type="d"), np.float64)
    try:
        return np.frombuffer(value.as_buffer(of_type="i"), np.int64)
    except ValueError:
        return np.frombuffer(value.as_buffer(of_type="u"), np.uint64)


def _is_rectangular(value: simdjson.Array, shape: list[int], whole: bytes | None) -> bool:
    """Whether the array is `shape` all through: its numbers are flattened from any nesting, so only its
    brackets and commas tell. The whole body's (`whole`) are tried first: they are the array's alone when
    the body is this array in its object, as one-input bodies are, and then they cannot equal a
    rectangle's unless the array's do. (Else the array's structure is a run inside the rectangle's
    that opens with `len(shape)` brackets, as only the whole rectangle does.) Otherwise the array is
    printed minified on its own (`mini` is typed str, but is bytes)."""
    rectangle = _rectangular(shape)
    if whole is not None and _structure(whole) == rectangle:
        return True
    return _structure(cast(bytes, value.mini)) == rectangle


def _structure(text: bytes) -> bytes:
    """The brackets and commas of a numeric array's minified JSON (every other byte deleted in C)."""
    return text.translate(None, _NOT_STRUCTURE)


_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b"[],")))


def _rectangular(shape: list[int]) -> bytes:
    """The brackets and commas of a dense array of `shape`: [[,],[,],[,]] for [3, 2]."""
    structure = b""
    for size in reversed(shape):
        structure = b"[" + b",".join([structure] * size) + b"]"
    return structure


class JsonParsing:
    """Where bodies are parsed: on the event loop when small, else in one worker process, started on the
    first large body. It imports only this module's needs (numpy, orjson, simdjson), never TensorFlow,
    unless a large body needs TensorFlow's protos to be read (Classify and Regress examples)."""

    def __init__(self) -> None:
        self._workers: ProcessPoolExecutor | None = None

    async def run(self, read: Callable[..., Result], body: bytes, *args: Any) -> Result:
        """`read(body, *args)`, here or in the worker by the body's size. `read` must be a module-level
        function; its errors come back as they were raised."""
        if len(body) <= IN_LOOP_BYTES:
            return read(body, *args)
        if self._workers is None:
            # spawn, not fork: a fork of a process with gRPC's threads running is not safe.
            self._workers = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        workers = self._workers
        try:
            return await asyncio.get_running_loop().run_in_executor(workers, read, body, *args)
        except BrokenProcessPool:
            if self._workers is workers:  # the next large body starts a new one
                self._workers = None
            raise ServingError(
                grpc.StatusCode.UNAVAILABLE, "the server's JSON parsing process stopped; try again"
            ) from None

    def close(self) -> None:
        if self._workers is not None:
            self._workers.shutdown(wait=False, cancel_futures=True)
