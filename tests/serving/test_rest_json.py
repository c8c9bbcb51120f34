"""serving/rest_json.py in process: TF Serving's REST JSON encoding of Predict, both ways.

Requests are checked against hand-made SignatureDefs (only the inputs' names and dtypes matter to this
module), so every format, dtype and refusal is tried without a model. Where the server promises TF
Serving's wording (tensorflow_serving/util/json_tensor.cc), the test holds it to that wording, since
clients match on it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import orjson
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from serving.errors import ServingError
from serving.json_document import parse_json
from serving.model_pool import ModelPool
from serving.rest_json import (
    InputDtypes,
    PredictBody,
    parse_predict_body,
    predict_response,
    to_input_arrays,
)
from serving.servable import Servable, input_dtypes

pytestmark = pytest.mark.fast


def signature(**inputs: tf.DType) -> InputDtypes:
    """What the JSON encoding takes of a SignatureDef with these inputs (name=dtype), in this order."""
    made = meta_graph_pb2.SignatureDef()
    for name, dtype in inputs.items():
        made.inputs[name].dtype = dtype.as_datatype_enum
    return input_dtypes(made)


def body(document: Any) -> PredictBody:
    return parse_predict_body(json.dumps(document).encode())


def refusal(call: Callable[..., object], *args: object) -> str:
    """The message of the INVALID_ARGUMENT that `call(*args)` must raise."""
    with pytest.raises(ServingError) as raised:
        call(*args)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.http_status == 400
    return raised.value.message


def b64(raw: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(raw).decode()}


IMAGES = signature(images=tf.float32)
TWO = signature(a=tf.float32, b=tf.int32)

# ---- the request body ---------------------------------------------------------------------------


def test_row_and_columnar_bodies_and_the_signature_name() -> None:
    rows = body({"signature_name": "classify", "instances": [[1, 2]]})
    assert (rows.signature_name, rows.values, rows.row_format) == ("classify", [[1, 2]], True)
    columns = body({"inputs": {"a": [1]}})
    assert (columns.signature_name, columns.values, columns.row_format) == ("", {"a": [1]}, False)


def test_a_byte_order_mark_and_non_finite_numbers_are_read_as_rapidjson_reads_them() -> None:
    """RapidJSON skips a UTF-8 byte order mark, each of its bytes in turn when it comes, and reads NaN
    and Infinity as numbers: refused only as model inputs (serving/servable.py), not under other keys."""
    for mark in (b"\xef\xbb\xbf", b"\xbb", b"\xef\xbf"):
        assert parse_predict_body(mark + b'{"instances": [[1, 2]]}').values == [[1, 2]]
    parsed = parse_predict_body(b'{"meta": {"a": NaN, "b": -Infinity}, "instances": [[1, 2]]}')
    assert parsed.values == [[1, 2]]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "JSON Parse error: The document is empty"),
        (b"  \n", "JSON Parse error: The document is empty"),
        (b'{"instances": [1,]}', "JSON Parse error: Invalid value. at offset: 17"),
        (
            b'{"instances": [1 2]}',
            "JSON Parse error: Missing a comma or ']' after an array element. at offset: 17",
        ),
        (
            b'{"a": "]", "instances": [1] "b": 2}',
            "JSON Parse error: Missing a comma or '}' after an object member. at offset: 28",
        ),
        (
            b'{"instances" [1]}',
            "JSON Parse error: Missing a colon after a name of object member. at offset: 13",
        ),
        (b"[1, 2]", "JSON Value: [1,2] Is not object"),
        (
            b'{"instances": [1], "inputs": [1]}',
            """JSON Value: {"instances":[1],"inputs":[1]} Not formatted correctly expecting only one of """
            "'inputs' or 'instances' keys to exist ",
        ),
        (b'{"signature_name": "x"}', "Missing 'inputs' or 'instances' key"),
        (
            b'{"instances": {"a": 1}}',
            """JSON Value: {"instances":{"a":1}} Expecting 'instances' to be an list/array""",
        ),
        (b'{"instances": []}', """JSON Value: {"instances":[]} No values in 'instances' array"""),
        (
            b'{"instances": [1], "signature_name": 3}',
            """JSON Value: {"instances":[1],"signature_name":3} not formatted correctly. """
            "'signature_name' key must be a string value.",
        ),
        (b'\xef\xbb\xbf{"instances": [1,]}', "JSON Parse error: Invalid value. at offset: 20"),
        (b'{"instances": ["\xff"]}', "JSON Parse error: the body is not UTF-8 at offset: 16"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON Parse error: the document is nested too deeply"),
        (
            b'{"instances": [1' + b"0" * 5000 + b"]}",
            "JSON Parse error: Number too big to be stored in double. at offset: 15",
        ),
        (
            b'{"a": "1e999", "instances": [2, -1' + b"0" * 400 + b"]}",
            "JSON Parse error: Number too big to be stored in double. at offset: 32",  # where it starts
        ),
        (b'{"instances": [nul]}', "JSON Parse error: Invalid value. at offset: 18"),  # after what matched
        (b'{"instances": [nan]}', "JSON Parse error: Invalid value. at offset: 16"),
        (b'{"instances": [Infinit]}', "JSON Parse error: Invalid value. at offset: 22"),
        (b'{"instances": [- 1]}', "JSON Parse error: Invalid value. at offset: 16"),
        (b'{"a": "\xc3\xa9", "instances": [1,]}', "JSON Parse error: Invalid value. at offset: 28"),  # bytes
        (b'{"instances": [1.]}', "JSON Parse error: Miss fraction part in number. at offset: 17"),
        (b'{"instances": [1.5e+]}', "JSON Parse error: Miss exponent in number. at offset: 20"),
        (
            b'{"instances": [1.5.3]}',
            "JSON Parse error: Missing a comma or ']' after an array element. at offset: 18",
        ),
        (b'{"instances": ["a\tb"]}', "JSON Parse error: Invalid escape character in string. at offset: 17"),
        (
            b'{"instances": ["a\x00b"]}',
            "JSON Parse error: Missing a closing quotation mark in string. at offset: 17",
        ),
        (
            b'{"signature_name": "\\ud800", "instances": [1]}',
            "JSON Parse error: The surrogate pair in string is invalid. at offset: 20",
        ),
        (
            b'{"instances": [1], "x": "\xc3\xa9\\ud800\\u0041"}',
            "JSON Parse error: The surrogate pair in string is invalid. at offset: 27",
        ),
        (
            b'{"instances": ["\\udc00"]}',
            "JSON Parse error: The surrogate pair in string is invalid. at offset: 16",
        ),
    ],
    ids=[
        "empty",
        "blank",
        "syntax",
        "no-comma-in-array",
        "no-comma-in-object",
        "no-colon",
        "not-object",
        "both-keys",
        "neither-key",
        "instances-not-list",
        "instances-empty",
        "signature-not-string",
        "after-a-byte-order-mark",
        "not-utf8",
        "too-deep",
        "integer-of-5000-digits",
        "integer-past-a-double",
        "part-of-null",
        "part-of-nan",
        "part-of-infinity",
        "a-minus-alone",
        "offset-in-bytes",
        "no-fraction",
        "no-exponent",
        "a-second-point",
        "control-character",
        "nul",
        "first-half-of-a-surrogate-pair-alone",
        "first-half-then-another-escape",
        "second-half-alone",
    ],
)
def test_bad_bodies_are_refused_with_tf_servings_message(raw: bytes, message: str) -> None:
    assert refusal(parse_predict_body, raw) == message


def test_the_quoted_document_is_cut_at_256_bytes() -> None:
    """TF Serving quotes the document in its errors; a huge body must not come back in the error."""
    message = refusal(parse_predict_body, json.dumps({"instances": {"a": "x" * 10_000}}).encode())
    assert message == "JSON Value: " + ('{"instances":{"a":"' + "x" * 10_000)[:256] + (
        " Expecting 'instances' to be an list/array"
    )


def test_a_whole_surrogate_pair_and_an_escaped_backslash_are_read() -> None:
    """By Python's parser too, which reads a body orjson refuses (here for what follows the document)."""
    document = parse_json(b'["\\ud83d\\ude00", "\\\\ud800"] and more')
    assert document == ["\U0001f600", "\\ud800"]


def test_parse_json_reads_any_document() -> None:
    """The :classify and :regress bodies go through parse_json alone: it does not insist on Predict keys."""
    assert parse_json(b'{"examples": [{"x": 1}]}') == {"examples": [{"x": 1}]}


def test_numbers_are_held_as_rapidjson_holds_them() -> None:
    """Exact integers within 64 bits, doubles past them (TF Serving's parser does the same)."""
    document = parse_json(b'{"x": [18446744073709551615, -9223372036854775808, 1' + b"0" * 30 + b"]}")
    assert document["x"][:2] == [2**64 - 1, -(2**63)] and document["x"][2] == 1e30


@pytest.mark.parametrize("rest", [b" []", b"xyz", b'{"instances": [2]}', b"\n\x00\xff"])
def test_what_follows_the_document_is_not_read(rest: bytes) -> None:
    """RapidJSON's kParseStopWhenDoneFlag in TF Serving: the parse ends with the first value."""
    assert parse_json(b' {"instances": [1]}' + rest) == {"instances": [1]}


# ---- inputs: formats ----------------------------------------------------------------------------


def test_rows_of_a_single_unnamed_input_become_one_batch() -> None:
    arrays = to_input_arrays(body({"instances": [[1, 2.5], [3, 4]]}), IMAGES)
    assert list(arrays) == ["images"]
    assert arrays["images"].dtype == np.float32
    np.testing.assert_array_equal(arrays["images"], np.array([[1, 2.5], [3, 4]], np.float32))


def test_rows_of_named_inputs_become_one_column_each() -> None:
    arrays = to_input_arrays(body({"instances": [{"a": [1, 2], "b": 3}, {"b": 4, "a": [5, 6]}]}), TWO)
    np.testing.assert_array_equal(arrays["a"], np.array([[1, 2], [5, 6]], np.float32))
    np.testing.assert_array_equal(arrays["b"], np.array([3, 4], np.int32))
    assert (arrays["a"].dtype, arrays["b"].dtype) == (np.float32, np.int32)


def test_a_single_input_may_also_be_named_in_rows() -> None:
    arrays = to_input_arrays(body({"instances": [{"images": [1]}, {"images": [2]}]}), IMAGES)
    np.testing.assert_array_equal(arrays["images"], np.array([[1], [2]], np.float32))


def test_columnar_inputs_unnamed_and_named() -> None:
    unnamed = to_input_arrays(body({"inputs": [[1, 2], [3, 4]]}), IMAGES)
    np.testing.assert_array_equal(unnamed["images"], np.array([[1, 2], [3, 4]], np.float32))
    named = to_input_arrays(body({"inputs": {"a": [[1, 2]], "b": [7], "ignored": "x"}}), TWO)
    assert sorted(named) == ["a", "b"]  # extra keys are ignored, as TF Serving ignores them
    np.testing.assert_array_equal(named["b"], np.array([7], np.int32))


def test_columnar_inputs_may_be_a_scalar() -> None:
    """Columnar form has no batch dimension of its own: a bare value is a rank-0 tensor."""
    arrays = to_input_arrays(body({"inputs": 3}), signature(x=tf.int64))
    assert arrays["x"].shape == () and arrays["x"] == 3 and arrays["x"].dtype == np.int64


@pytest.mark.parametrize(
    ("document", "sig", "message"),
    [
        (
            {"instances": [[1], [2]]},
            TWO,
            "instances is a plain list, but expecting list of objects as multiple input tensors required "
            "as per tensorinfo_map",
        ),
        (
            {"inputs": [[1], [2]]},
            TWO,
            "inputs is a plain value/list, but expecting an object as multiple input tensors required as "
            "per tensorinfo_map",
        ),
        (
            {"instances": [[1], {"images": [2]}]},
            IMAGES,
            "Expecting value/list but got object at item 1 of input list",
        ),
        ({"inputs": {"a": [1]}}, TWO, "Missing named input: b in 'inputs' object."),
        (
            {"instances": [{"a": 1, "b": 2}, {"a": 1, "c": 2}]},
            TWO,
            """Failed to process element: 1 of 'instances' list. JSON object: {"a":1,"c":2} keys must be """
            "equal to: a,b",
        ),
        (
            {"instances": [{"images": [1]}, [2]]},
            IMAGES,
            "Expecting object but got list at item 1 of input list",  # the first row sets the form
        ),
        (
            {"instances": [[[0.5, True]]]},
            IMAGES,
            "input 'images' holds booleans, expected values of type float32",
        ),
    ],
    ids=[
        "rows-plain-for-two",
        "columns-plain-for-two",
        "rows-mixed",
        "columns-missing",
        "rows-wrong-keys",
        "rows-objects-then-plain",
        "booleans-among-numbers",
    ],
)
def test_inputs_that_do_not_fit_the_signature_are_refused(
    document: dict[str, Any], sig: meta_graph_pb2.SignatureDef, message: str
) -> None:
    assert refusal(to_input_arrays, body(document), sig) == message


ROW_ERROR = "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"instances": [[1, 2], [3]]}, ROW_ERROR + "Expecting tensor size: 2 but got: 1"),
        ({"instances": [[[1, 2]], [[3, 4], [5, 6]]]}, ROW_ERROR + "Expecting tensor size: 2 but got: 4"),
        ({"inputs": [[1, 2], [3]]}, "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
        (
            {"inputs": [[1, 2], 3]},
            "JSON Value: 3 found at incorrect level: 2 in the JSON DOM. Expected at level: 2",
        ),
    ],
    ids=["rows", "rows-deeper", "columns", "list-and-scalar"],
)
def test_ragged_inputs_are_refused_in_tf_servings_words(document: dict[str, Any], message: str) -> None:
    """A tensor must be dense: the first elements set the shape, and the first place that leaves it is
    named as TF Serving's json_tensor.cc names it (each row on its own, then against the first row)."""
    assert refusal(to_input_arrays, body(document), IMAGES) == message


# ---- inputs: dtypes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "values", "expected"),
    [
        (tf.float32, [1, 2.5], np.array([1, 2.5], np.float32)),
        (tf.float64, [0.1], np.array([0.1], np.float64)),
        (tf.int32, [1, -2], np.array([1, -2], np.int32)),
        (tf.int64, [2**40], np.array([2**40], np.int64)),
        (tf.bool, [True, False], np.array([True, False])),
    ],
    ids=lambda v: getattr(v, "name", None),
)
def test_values_take_the_signatures_dtype(dtype: tf.DType, values: list[Any], expected: np.ndarray) -> None:
    (array,) = to_input_arrays(body({"instances": values}), signature(x=dtype)).values()
    assert array.dtype == expected.dtype
    np.testing.assert_array_equal(array, expected)


@pytest.mark.parametrize(
    ("dtype", "values", "message"),
    [
        (tf.int32, [1, 1.5], "input 'x' holds fractional numbers, expected values of type int32"),
        (tf.int32, [1.0], "input 'x' holds fractional numbers, expected values of type int32"),
        (tf.float32, ["1"], "input 'x' holds strings, expected values of type float32"),
        (tf.float32, [1, None], "input 'x' holds objects or nulls, expected values of type float32"),
        (tf.float32, [True], "input 'x' holds booleans, expected values of type float32"),
        (tf.bool, [1], "input 'x' holds int64, expected values of type bool"),
        (tf.float32, [1e39], "input 'x' holds values out of range for float32"),
    ],
    ids=[
        "fraction-for-int",
        "1.0-for-int",
        "string",
        "null",
        "bool-for-float",
        "int-for-bool",
        "float32-overflow",
    ],
)
def test_values_of_the_wrong_kind_are_refused(dtype: tf.DType, values: list[Any], message: str) -> None:
    """As TF Serving's parser: no 1.0 for an integer, no true for a number, nothing lossy."""
    assert refusal(to_input_arrays, body({"instances": values}), signature(x=dtype)) == message


def test_a_uint8_input_takes_json_integers() -> None:
    """JSON integers arrive as int64 whatever the input's dtype; TF Serving takes any that fits."""
    (array,) = to_input_arrays(body({"instances": [0, 255]}), signature(x=tf.uint8)).values()
    assert array.dtype == np.uint8
    assert array.tolist() == [0, 255]
    for out_of_range in (-1, 256):
        message = refusal(to_input_arrays, body({"instances": [out_of_range]}), signature(x=tf.uint8))
        assert message == "input 'x' holds values out of range for uint8"


@pytest.mark.parametrize(
    ("dtype", "values"),
    [
        (tf.int32, [2**40 + 5]),
        (tf.int32, [1, -(2**31) - 1]),
        (tf.int8, [[1], [128]]),
        (tf.uint16, [65536]),
        (tf.int64, [2**63]),
        (tf.uint64, [2**64]),
        (tf.uint64, [-1, 2**64 - 1]),
        (tf.int64, [2**70]),
    ],
    ids=[
        "int32",
        "int32-negative",
        "int8-nested",
        "uint16",
        "int64-from-uint64",
        "uint64",
        "uint64-negative",
        "int64-huge",
    ],
)
def test_an_integer_too_large_for_its_dtype_is_refused(dtype: tf.DType, values: list[Any]) -> None:
    """Not cast with wraparound (2**40 + 5 would become 5 as int32): refused, as TF Serving does."""
    message = refusal(to_input_arrays, body({"instances": values}), signature(x=dtype))
    assert message == f"input 'x' holds values out of range for {dtype.name}"


def test_integers_at_the_edges_of_their_dtype_are_kept() -> None:
    """Exactly: [0, 2**64 - 1] is no int64 array, and numpy would make it float64, rounded."""
    for dtype in (tf.int8, tf.uint8, tf.int32, tf.uint32, tf.int64, tf.uint64):
        limits = np.iinfo(dtype.as_numpy_dtype)
        values = [int(limits.min), int(limits.max)]
        (array,) = to_input_arrays(body({"inputs": values}), signature(x=dtype)).values()
        assert array.dtype == dtype.as_numpy_dtype and array.tolist() == values


def test_strings_travel_as_text_or_b64_in_every_position() -> None:
    """DT_STRING inputs take plain strings (UTF-8) or {"b64": ...} (any bytes), nested or not, in rows
    and in named rows alike."""
    raw = bytes(range(256))
    unnamed = to_input_arrays(body({"instances": [b64(raw), "text", b64(b"")]}), signature(s=tf.string))
    assert unnamed["s"].dtype == object
    assert unnamed["s"].tolist() == [raw, b"text", b""]

    named = to_input_arrays(
        body({"instances": [{"s": [b64(b"\x00"), "\u00e9"], "n": 1}]}), signature(s=tf.string, n=tf.int64)
    )
    assert named["s"].tolist() == [[b"\x00", "\u00e9".encode()]]
    assert named["n"].tolist() == [1]

    columns = to_input_arrays(body({"inputs": b64(b"\xff")}), signature(s=tf.string))
    assert columns["s"].shape == () and columns["s"].item() == b"\xff"


@pytest.mark.parametrize(
    "value",
    [{"b64": "not base64!"}, {"b64": 3}, {"b64": "YQ="}, {"b64": "YWJjZ"}, {"b64": "Y=Q="}],
    ids=["chars", "number", "wrong-padding", "one-char-over", "padding-inside"],
)
def test_bad_b64_is_refused(value: dict[str, Any]) -> None:
    message = refusal(to_input_arrays, body({"instances": [value]}), signature(s=tf.string))
    assert message == "Unable to base64 decode"  # util/json_tensor.cc:386


def test_b64_padding_may_be_left_off_as_absl_allows() -> None:
    """absl::Base64Unescape: padding is optional, '.' pads as '=' does, ASCII whitespace is skipped
    (base64.encodebytes breaks its lines every 76 characters)."""
    for text, expected in (
        ("YQ", b"a"),
        ("YQ==", b"a"),
        ("YQ..", b"a"),
        (" YQ==\n", b"a"),
        ("YWJj", b"abc"),
        ("YW\nJj\r\n", b"abc"),
    ):
        decoded = to_input_arrays(body({"instances": [{"b64": text}]}), signature(s=tf.string))
        assert decoded["s"].tolist() == [expected]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"instances": [["a", "b"], ["c"]]}, ROW_ERROR + "Expecting tensor size: 2 but got: 1"),
        ({"instances": [[[b64(b"a")]], ["c"]]}, ROW_ERROR + "Expecting shape [1,1] but got: [1]"),
        ({"inputs": ["a", ["b"]]}, "Encountered list at unexpected level: 1 expected < 1"),
        ({"inputs": [[], ["b"]]}, "Encountered list at unexpected size: 1 at level: 1 expected size: 0"),
    ],
    ids=["rows", "rows-deeper", "list-and-scalar", "empty-and-not"],
)
def test_ragged_string_inputs_are_refused(document: dict[str, Any], message: str) -> None:
    """np.asarray(dtype=object) takes ragged lists (as an array of lists); tf.constant would not."""
    assert refusal(to_input_arrays, body(document), signature(s=tf.string)) == message


@pytest.mark.parametrize(
    ("values", "found"),
    [
        ([5], "numbers"),
        ([["a", 2.5]], "numbers"),
        ([True], "booleans"),
        ([None], "nulls"),
        ([[{"text": "a"}]], "objects"),
        ([[{"b64": "YQ==", "x": 1}]], "objects"),
    ],
    ids=["number", "nested-fraction", "bool", "null", "object", "b64-and-more"],
)
def test_a_non_string_for_a_string_input_is_refused(values: list[Any], found: str) -> None:
    """TF Serving refuses these too ("JSON Value: 5 Type: Number is not of expected type: string");
    passed on, they would make tf.constant raise (a 500)."""
    message = refusal(to_input_arrays, body({"instances": values}), signature(s=tf.string))
    assert message == f"input 's' holds {found}, expected values of type string"


# ---- outputs ------------------------------------------------------------------------------------


def written(outputs: dict[str, np.ndarray], row_format: bool) -> Any:
    """The Predict answer as a client reads it: written by orjson as the server writes it, then parsed."""
    return json.loads(orjson.dumps(predict_response(outputs, row_format)))


def test_row_responses_are_predictions_one_per_example() -> None:
    one = written({"probabilities": np.array([[0.25, 0.75], [1, 0]], np.float32)}, row_format=True)
    assert one == {"predictions": [[0.25, 0.75], [1.0, 0.0]]}

    many = written(
        {"classes": np.array([3, 7], np.int64), "scores": np.array([[0.5], [0.125]], np.float32)},
        row_format=True,
    )
    assert many == {"predictions": [{"classes": 3, "scores": [0.5]}, {"classes": 7, "scores": [0.125]}]}


def test_columnar_responses_are_outputs_bare_or_by_name() -> None:
    one = written({"y": np.array([1, 2], np.int32)}, row_format=False)
    assert one == {"outputs": [1, 2]}
    many = written({"y": np.array([1], np.int32), "z": np.array(0.5, np.float64)}, row_format=False)
    assert many == {"outputs": {"y": [1], "z": 0.5}}


def test_floats_are_written_in_tf_servings_digits() -> None:
    """WriteDecimal (util/json_tensor.cc:124-168): six significant digits when they read back as the
    same float, else full precision (9 digits for float32, 17 for float64), `.0` on a number with
    neither a point nor an exponent; so float32's 0.1 is 0.1, not 0.10000000149011612."""
    float32 = np.array([0.1, 1 / 3, 1e-8, 3e38, 9e6, 2, -0.0, 0.20508598, np.nan], np.float32)
    assert orjson.dumps(predict_response({"y": float32}, row_format=False)) == (
        b'{"outputs":[0.1,0.333333343,1e-08,3e+38,9e+06,2.0,-0.0,0.205085978,null]}'
    )
    float64 = np.array([[0.1, 1 / 3], [1e300, -np.inf]], np.float64)
    assert orjson.dumps(predict_response({"y": float64}, row_format=True)) == (
        b'{"predictions":[[0.1,0.33333333333333331],[1e+300,null]]}'
    )
    assert orjson.dumps(predict_response({"y": np.array(0.5, np.float32)}, row_format=False)) == (
        b'{"outputs":0.5}'
    )


def test_string_outputs_are_text_unless_their_alias_ends_in_bytes() -> None:
    """TF Serving's rule: a DT_STRING output is text, or {"b64": ...} when its alias ends in _bytes."""
    text = written({"label": tf.constant([b"seven", b"\xff"]).numpy()}, row_format=False)
    assert text == {"outputs": ["seven", "\ufffd"]}
    scalar = written({"image_bytes": np.array(b"\x00\x01", dtype=object)}, row_format=False)
    assert scalar == {"outputs": {"b64": "AAE="}}
    fixed_width = written({"image_bytes": np.array([b"a", b"bc"], dtype="S")}, row_format=False)
    assert fixed_width == {"outputs": [{"b64": "YQ=="}, {"b64": "YmM="}]}


def test_a_batch_of_bytes_outputs_from_tensorflow_is_b64() -> None:
    """TensorFlow's string arrays hold plain bytes at every rank; each one is encoded on its own."""
    response = written({"image_bytes": tf.constant([b"a", b"bc"]).numpy()}, row_format=True)
    assert response == {"predictions": [{"b64": "YQ=="}, {"b64": "YmM="}]}
    matrix = written({"image_bytes": tf.constant([[b"a"], [b""]]).numpy()}, row_format=False)
    assert matrix == {"outputs": [[{"b64": "YQ=="}], [{"b64": ""}]]}


def test_scalar_outputs_of_a_savedmodel_reach_json(tmp_path: Path) -> None:
    """`.numpy()` of a scalar string tensor is plain bytes, not an array: the Servable must hand the
    encoder arrays all the same."""

    class Scalars(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {
                "label": tf.constant("seven"),
                "raw_bytes": tf.constant(b"\xff"),
                "total": tf.reduce_sum(x),
            }

    module = Scalars()
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.serve})
    servable = Servable("m", 1, tmp_path, ModelPool(threads=1, max_waiting=1))
    outputs = servable.predict_now("", {"x": np.array([1, 2], np.float32)})
    response = written(outputs, row_format=False)
    assert response == {"outputs": {"label": "seven", "raw_bytes": {"b64": "/w=="}, "total": 3.0}}


def test_responses_are_json() -> None:
    """Every value is a Python scalar or list, or a number already written (orjson.Fragment)."""
    response = written(
        {
            "i": np.array([[1, 2]], np.int64),
            "f": np.array([0.5], np.float16),
            "b": np.array([True]),
            "s": np.array([b"x"], dtype=object),
        },
        row_format=True,
    )
    assert response == {"predictions": [{"i": [1, 2], "f": 0.5, "b": True, "s": "x"}]}


def nested(key: str, *depths: int) -> PredictBody:
    """A body whose `key` holds one value per depth, each that many lists deep (written by hand: the
    standard encoder itself recurses)."""
    values = ", ".join("[" * depth + "1.0" + "]" * depth for depth in depths)
    return parse_predict_body(f'{{"{key}": [{values}]}}'.encode())


@pytest.mark.parametrize("depth", [64, 100, 1000])
@pytest.mark.parametrize("key", ["instances", "inputs"])
def test_values_nested_past_64_lists_are_a_400_that_says_so(key: str, depth: int) -> None:
    """numpy takes at most 64 dimensions: deeper JSON (up to orjson's 1,024 levels) is refused with a
    message, never a 500 or a recursion error."""
    message = refusal(to_input_arrays, nested(key, depth), IMAGES)
    assert "nested" in message and "64" in message


@pytest.mark.parametrize("depth", [45, 100])
def test_strings_nested_deep_are_a_400_too(depth: int) -> None:
    """numpy's object arrays take any nesting, then refuse to walk past 32 levels: still a 400."""
    assert refusal(to_input_arrays, nested("inputs", depth), signature(text=tf.string))


def test_a_deep_row_after_a_shallow_one_is_a_400_too() -> None:
    assert refusal(to_input_arrays, nested("instances", 1, 900), IMAGES)
