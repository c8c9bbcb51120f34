"""TF Serving's JSON tensor encoding: request bodies to numpy inputs, outputs back to JSON.

Row form: `{"instances": [...]}` (one entry per example: the value itself when the signature has one
input, else an object keyed by input name) answered with `{"predictions": [...]}`. Columnar form:
`{"inputs": value-or-object}` answered with `{"outputs": value-or-object}`. Strings travel as
`{"b64": "..."}` both ways for DT_STRING tensors (outputs whose alias ends in `_bytes`).
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving import json_decimals
from serving.errors import ServingError, invalid_argument
from serving.json_document import base64_bytes, excerpt, parse_json
from serving.tensors import MAX_RANK

# An input's dtype as numpy names it (TensorFlow's own for DT_STRING: object, holding bytes). This module
# needs no more of a signature, so it runs without TensorFlow, in the JSON parsing process too.
InputDtypes = dict[str, np.dtype]
STRING = np.dtype(object)


@dataclass(frozen=True)
class PredictBody:
    signature_name: str
    values: Any  # the JSON under "instances" or "inputs"
    row_format: bool


@dataclass(frozen=True)
class PredictDocument:
    """A Predict body parsed as far as TF Serving reads it before looking up the model and signature."""

    document: dict[str, Any]
    signature_name: str


def parse_predict_document(body: bytes) -> PredictDocument:
    """The JSON object and its signature name (`ParseJson`, then `FillSignature`): what TF Serving
    checks of a body before it looks up the model and signature, and so refuses before their errors."""
    document = parse_json(body)
    if not isinstance(document, dict):
        raise invalid_argument(f"JSON Value: {excerpt(document)} Is not object")
    signature_name = document.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise invalid_argument(
            f"JSON Value: {excerpt(document)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return PredictDocument(document, signature_name)


def predict_body(parsed: PredictDocument) -> PredictBody:
    """The tensors' part of a parsed body, checked as TF Serving checks it once it has the signature:
    exactly one of "instances" (a non-empty list) and "inputs"."""
    document = parsed.document
    has_rows, has_columns = "instances" in document, "inputs" in document
    if has_rows and has_columns:
        raise invalid_argument(
            f"JSON Value: {excerpt(document)} Not formatted correctly expecting only one of 'inputs' or "
            "'instances' keys to exist "
        )
    if not has_rows and not has_columns:
        raise invalid_argument("Missing 'inputs' or 'instances' key")
    if has_rows:
        if not isinstance(document["instances"], list):
            raise invalid_argument(
                f"JSON Value: {excerpt(document)} Expecting 'instances' to be an list/array"
            )
        if not document["instances"]:
            raise invalid_argument(f"JSON Value: {excerpt(document)} No values in 'instances' array")
    return PredictBody(parsed.signature_name, document["instances" if has_rows else "inputs"], has_rows)


def parse_predict_body(body: bytes) -> PredictBody:
    """A Predict body read whole, for a signature already found."""
    return predict_body(parse_predict_document(body))


# What refusals call a JSON leaf that a string input cannot take.
_JSON_KINDS = {bool: "booleans", int: "numbers", float: "numbers", dict: "objects", type(None): "nulls"}


def _decode_strings(name: str, value: Any) -> Any:
    """The value with each leaf as bytes: a string as UTF-8, {"b64": ...} decoded. Any other leaf is
    refused here, as TF Serving refuses it, because tf.constant would fail on it later with a 500."""
    if isinstance(value, list):
        return [_decode_strings(name, v) for v in value]
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict) and set(value) == {"b64"}:
        if not isinstance(value["b64"], str):
            raise invalid_argument("Unable to base64 decode")
        return base64_bytes(value["b64"])
    found = _JSON_KINDS.get(type(value), "objects")
    raise invalid_argument(f"input '{name}' holds {found}, expected values of type string")


def _nesting(value: Any) -> int:
    """How many lists deep `value` goes, level by level (no recursion), counted up to MAX_RANK + 1."""
    depth, level = 0, [value]
    while depth <= MAX_RANK:
        lists = [item for item in level if isinstance(item, list)]
        if not lists:
            break
        depth += 1
        level = [item for found in lists for item in found]
    return depth


def _dense_shape(value: Any) -> list[int]:
    """The shape a nested list claims by its first elements, as TF Serving reads it (GetDenseTensorShape)."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _misfit(value: Any, shape: list[int], level: int = 0) -> str:
    """TF Serving's words (json_tensor.cc, FillTensorProto) for the first place where `value` leaves
    `shape`; "" where it keeps it."""
    if not isinstance(value, list):
        if level != len(shape):
            return (
                f"JSON Value: {excerpt(value)} found at incorrect level: {level + 1} in the JSON DOM. "
                f"Expected at level: {len(shape)}"
            )
        return ""
    if level >= len(shape):
        return f"Encountered list at unexpected level: {level} expected < {len(shape)}"
    if len(value) != shape[level]:
        return (
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    return next((found for item in value if (found := _misfit(item, shape, level + 1))), "")


def _ragged(value: Any, rows: bool) -> ServingError:
    """A value that is no dense tensor, refused with TF Serving's message. In rows ("instances") each
    row is read on its own and must then match the first row, as TF Serving reads them."""
    if not rows:
        return invalid_argument(_misfit(value, _dense_shape(value)))
    first = _dense_shape(value[0])
    for index, row in enumerate(value):
        shape = _dense_shape(row)
        problem = _misfit(row, shape)
        if not problem and math.prod(shape) != math.prod(first):
            problem = f"Expecting tensor size: {math.prod(first)} but got: {math.prod(shape)}"
        elif not problem and shape != first:
            problem = f"Expecting shape {_shape_text(first)} but got: {_shape_text(shape)}"
        if problem:
            return invalid_argument(
                f"Failed to process element: {index} of 'instances' list. Error: INVALID_ARGUMENT: {problem}"
            )
    return invalid_argument("the input is not a dense tensor")


def _shape_text(shape: list[int]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


def _out_of_range(name: str, dtype: np.dtype) -> ServingError:
    return invalid_argument(f"input '{name}' holds values out of range for {dtype.name}")


def _string_array(name: str, value: Any, rows: bool) -> np.ndarray:
    """A DT_STRING input as an object array of bytes. np.asarray(dtype=object) takes ragged lists
    without complaint, as an array holding lists, so density is checked on what it made."""
    if _nesting(value) > MAX_RANK:  # np.asarray(dtype=object) takes any depth, then chokes on it
        raise invalid_argument(
            f"input '{name}' is nested more than {MAX_RANK} lists deep: at most {MAX_RANK} dimensions"
        )
    try:
        array = np.asarray(_decode_strings(name, value), dtype=object)
        strings = all(isinstance(item, bytes) for item in array.flat)
    except (ValueError, RuntimeError):  # numpy's object arrays iterate at most 32 dimensions
        raise _ragged(value, rows) from None
    if not strings:
        raise _ragged(value, rows)
    return array


# The JSON number kinds each numeric dtype accepts, as TF Serving's parser does (no 1.0 for an int).
# JSON integers come as int64 (uint64 past its range) whatever the input's integer dtype, so every
# integer dtype takes both; checked_integers then refuses the values outside the dtype's range.
_ACCEPTED_KINDS = {"f": "iuf", "i": "iu", "u": "iu", "b": "b"}


def checked_integers(name: str, values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The integers as `dtype`, refused when any is out of its range: astype would wrap them around
    (2**40 + 5 becomes 5 as int32)."""
    limits = np.iinfo(dtype)
    if values.size and (int(values.min()) < limits.min or int(values.max()) > limits.max):
        raise _out_of_range(name, dtype)
    return values.astype(dtype)


def _beyond_64_bits(values: np.ndarray) -> bool:
    """Whole numbers some of which no 64-bit integer holds."""
    finite = np.isfinite(values).all()
    return bool(finite and (values == np.trunc(values)).all() and (np.abs(values) >= 2.0**63).any())


def to_float(name: str, values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Numbers as the floating-point `dtype`, refused when any is too large for it (float64 to float32)."""
    try:
        with np.errstate(over="raise"):
            return values.astype(dtype)
    except (OverflowError, FloatingPointError):
        raise _out_of_range(name, dtype) from None


def _to_array(name: str, value: Any, dtype: np.dtype, rows: bool) -> np.ndarray:
    """The JSON value as an array of the input's dtype, or a 400 naming the problem: whatever gets past
    here must not make the model raise (a 500), nor be changed on the way (no wraparound). `rows`: the
    value is the list of an input's "instances" rows."""
    if dtype == STRING:
        return _string_array(name, value, rows)
    try:
        inferred = np.asarray(value)
    except ValueError:
        if _nesting(value) > MAX_RANK:
            raise invalid_argument(
                f"input '{name}' is nested more than {MAX_RANK} lists deep: at most {MAX_RANK} dimensions"
            ) from None
        raise _ragged(value, rows) from None
    if dtype.kind in "iu" and inferred.dtype.kind in "fO":
        # numpy makes JSON integers float64 (rounded) when they fit neither int64 nor uint64 together,
        # as 0 and 2**64 - 1, and Python objects past uint64: take them again as exact Python ints.
        exact = np.asarray(value, dtype=object)
        if exact.size and all(type(v) is int for v in exact.flat):
            return checked_integers(name, exact, dtype)
    if dtype.kind in "iu" and inferred.dtype.kind == "f" and _beyond_64_bits(inferred):
        raise _out_of_range(name, dtype)  # orjson reads integers past 64 bits as floats
    kind = inferred.dtype.kind
    if dtype.kind in "iuf" and kind in "iuf" and _holds_booleans(value):
        kind = "b"  # numpy took true and false among the numbers as 1 and 0
    if kind not in _ACCEPTED_KINDS.get(dtype.kind, ""):
        found = {"U": "strings", "O": "objects or nulls", "b": "booleans", "f": "fractional numbers"}.get(
            kind, inferred.dtype.name
        )
        raise invalid_argument(f"input '{name}' holds {found}, expected values of type {dtype.name}")
    if dtype.kind in "iu":
        return checked_integers(name, inferred, dtype)
    return to_float(name, inferred, dtype)


def _holds_booleans(value: Any) -> bool:
    """Whether a JSON value holds true or false anywhere in its lists."""
    level = [value]
    while level:
        if any(type(item) is bool for item in level):
            return True
        level = [item for items in level if type(items) is list for item in items]
    return False


def _is_named(value: Any) -> bool:
    """An object naming inputs, as opposed to a {"b64": ...} string value."""
    return isinstance(value, dict) and set(value) != {"b64"}


def _rows_to_columns(rows: list[Any], names: list[str]) -> dict[str, list[Any]]:
    """The "instances" rows as one list per input. The first row says which form they all take, as
    TF Serving reads them (util/json_tensor.cc:536-578): objects naming the inputs, or plain values of
    the one input."""
    if not _is_named(rows[0]):
        if len(names) > 1:
            raise invalid_argument(
                "instances is a plain list, but expecting list of objects as multiple input tensors required "
                "as per tensorinfo_map"
            )
        if any(_is_named(row) for row in rows):
            index = next(i for i, row in enumerate(rows) if _is_named(row))
            raise invalid_argument(f"Expecting value/list but got object at item {index} of input list")
        return {names[0]: rows}
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for index, row in enumerate(rows):
        if not _is_named(row):
            raise invalid_argument(f"Expecting object but got list at item {index} of input list")
        if set(row) != set(names):
            raise invalid_argument(
                f"Failed to process element: {index} of 'instances' list. JSON object: {excerpt(row)} "
                f"keys must be equal to: {','.join(sorted(names))}"
            )
        for name in names:
            columns[name].append(row[name])
    return columns


def to_input_arrays(body: PredictBody, inputs: InputDtypes) -> dict[str, np.ndarray]:
    """The body's values as numpy arrays of the signature's input dtypes."""
    names = list(inputs)
    if body.row_format:
        columns = _rows_to_columns(body.values, names)
    elif _is_named(body.values):
        missing = [name for name in names if name not in body.values]
        if missing:
            raise invalid_argument(f"Missing named input: {missing[0]} in 'inputs' object.")
        columns = {name: body.values[name] for name in names}  # extra keys are ignored, as in TF Serving
    elif len(names) == 1:
        columns = {names[0]: body.values}
    else:
        raise invalid_argument(
            "inputs is a plain value/list, but expecting an object as multiple input tensors required as per "
            "tensorinfo_map"
        )
    try:
        return {
            name: _to_array(name, value, inputs[name], body.row_format) for name, value in columns.items()
        }
    except RecursionError:  # reading a value hundreds of lists deep: a 400, never a traceback
        raise invalid_argument("the input is nested too deeply to be a tensor") from None


def _b64_value(raw: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(raw).decode()}


def _text_value(raw: bytes) -> str:
    # TF Serving copies the bytes into the JSON as they are; bytes that are not UTF-8 would make the
    # response invalid JSON, so they come out as U+FFFD instead.
    return raw.decode(errors="replace")


def _jsonable(name: str, array: np.ndarray) -> Any:
    if array.dtype == object or array.dtype.kind == "S":
        # TF Serving's rule (g3doc/api_rest.md): a DT_STRING output is text, or {"b64": ...} when its
        # alias ends in `_bytes`. Each element is encoded on its own, whatever the rank, since the
        # elements of TensorFlow's object arrays are plain bytes.
        encode = _b64_value if name.endswith("_bytes") else _text_value
        return np.vectorize(encode, otypes=[object])(array).tolist()
    if array.dtype in (np.float32, np.float64):
        return json_decimals.decimals(array)  # in TF Serving's digits
    return array.tolist()


def predict_response(outputs: dict[str, np.ndarray], row_format: bool) -> dict[str, Any]:
    """`{"predictions": ...}` for row requests, `{"outputs": ...}` for columnar ones."""
    values = {name: _jsonable(name, array) for name, array in outputs.items()}
    if not row_format:
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    batch = len(next(iter(values.values())))
    return {"predictions": [{name: value[i] for name, value in values.items()} for i in range(batch)]}
