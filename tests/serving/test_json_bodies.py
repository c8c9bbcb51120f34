"""serving/json_bodies.py in process: dense REST bodies read without Python objects, large ones off the
event loop.

Bodies here are over IN_LOOP_BYTES unless said otherwise; the general reader (tested in
test_rest_json.py, for every body that is not a dense numeric tensor) is the reference the dense path
must agree with.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
import numpy as np
import pytest

from serving import json_bodies, rest_json
from serving.errors import ServingError
from serving.json_bodies import IN_LOOP_BYTES, predict_inputs
from tests.conftest import ROOT
from tests.serving.readers import run_scenario

pytestmark = pytest.mark.fast

FLOAT = {"serving_default": {"images": np.dtype(np.float32)}}
RNG = np.random.default_rng(7)


def large(document: dict[str, Any]) -> bytes:
    body = json.dumps(document).encode()
    assert len(body) > IN_LOOP_BYTES
    return body


def general(body: bytes, signatures: dict[str, rest_json.InputDtypes]) -> json_bodies.PredictInputs:
    """What the general reader makes of `body` (the large-body path switched off)."""
    parsed = rest_json.parse_predict_body(body)
    inputs = signatures[parsed.signature_name or "serving_default"]
    return json_bodies.PredictInputs(
        parsed.signature_name, parsed.row_format, rest_json.to_input_arrays(parsed, inputs)
    )


def refusal(body: bytes, signatures: dict[str, rest_json.InputDtypes] | None = FLOAT) -> str:
    with pytest.raises(ServingError) as raised:
        predict_inputs(body, signatures)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return raised.value.message


@pytest.mark.parametrize(
    ("key", "values"),
    [
        ("instances", RNG.random((200, 28, 28, 1)).round(6)),  # rows of images, as the client sends
        ("inputs", RNG.random((200, 28, 28, 1)).round(6)),
        ("instances", RNG.integers(-5, 5, (90_000,))),  # JSON integers for a float input
    ],
)
def test_a_dense_tensor_is_read_as_the_general_reader_reads_it(key: str, values: np.ndarray) -> None:
    body = large({key: values.tolist(), "signature_name": ""})
    fast, reference = predict_inputs(body, FLOAT), general(body, FLOAT)
    assert (fast.signature_name, fast.row_format) == (reference.signature_name, reference.row_format)
    assert fast.arrays is not None and reference.arrays is not None
    assert fast.arrays["images"].dtype == np.float32 and fast.arrays["images"].shape == values.shape
    assert fast.arrays["images"].tobytes() == reference.arrays["images"].tobytes()


def test_named_inputs_of_integer_dtypes_are_read_and_range_checked() -> None:
    signatures: dict[str, rest_json.InputDtypes] = {
        "serving_default": {"ids": np.dtype(np.int32), "big": np.dtype(np.uint64)}
    }
    ids, big = RNG.integers(-1000, 1000, (300, 100)), [2**64 - 1, 0] * 20_000
    body = large({"inputs": {"ids": ids.tolist(), "big": big, "ignored": "x"}})
    arrays = predict_inputs(body, signatures).arrays
    assert arrays is not None
    assert arrays["ids"].dtype == np.int32 and (arrays["ids"] == ids).all()
    assert arrays["big"].dtype == np.uint64 and arrays["big"].tolist() == big
    too_large = large({"inputs": {"ids": [2**40] * 60_000, "big": [1]}})
    assert refusal(too_large, signatures) == "input 'ids' holds values out of range for int32"


@pytest.mark.parametrize(
    "values",
    [
        [[1.5, 2.5, 3.5]] * 20_000 + [[4.5]],  # ragged: the same count of numbers, other rows
        [[1.5, 2.5]] * 30_000 + [[3.5, 4.5, 5.5], [6.5]],  # as many numbers as the first row claims
        [1.5] * 60_000 + ["x"],  # a string among the numbers
        [1.5] * 60_000 + [None],
    ],
)
def test_anything_but_a_dense_tensor_gets_the_general_readers_refusal(values: list[Any]) -> None:
    body = large({"instances": values})
    with pytest.raises(ServingError) as raised:
        general(body, FLOAT)
    assert refusal(body) == raised.value.message


@pytest.mark.parametrize("name", ["[[,],[,],", "],[,]]", "[[[[[[", ",,,,,,"])
def test_brackets_elsewhere_in_the_body_do_not_make_a_ragged_tensor_dense(name: str) -> None:
    """The body's brackets and commas are compared with a rectangle's before the array's own: a string
    elsewhere holding some cannot make a ragged array (six numbers, as a 3x2 would have) pass."""
    signatures = {name: FLOAT["serving_default"]}
    for ragged in ([[1.5, 2.5], [3.5, 4.5, 5.5], [6.5]], [[1.5, 2.5], [3.5], [4.5, 5.5, 6.5]]):
        body = json.dumps({"signature_name": name, "instances": ragged}).encode()
        with pytest.raises(ServingError) as raised:
            general(body, signatures)
        assert refusal(body, signatures) == raised.value.message
    dense = json.dumps({"instances": [[1.5, 2.5]] * 3, "signature_name": name}).encode()
    arrays = predict_inputs(dense, signatures).arrays
    assert arrays is not None and arrays["images"].shape == (3, 2)


def test_a_large_body_names_a_missing_model_only_after_its_document_is_read() -> None:
    body = large({"instances": RNG.random((100, 784)).tolist(), "signature_name": "other"})
    parsed = predict_inputs(body, None)
    assert (parsed.signature_name, parsed.arrays) == ("other", None)
    assert refusal(body) == 'Serving signature name: "other" not found in signature def'
    assert refusal(body[:-1]).startswith("JSON Parse error: Missing a comma or '}'")


@pytest.mark.parametrize(
    "body",
    [b'{"foo": 1}', b'{"instances": [1], "inputs": [1]}', b'{"instances": []}', b'{"instances": {}}'],
)
def test_the_model_and_signature_are_looked_up_before_the_tensors_keys_are_checked(body: bytes) -> None:
    """TF Serving parses the document and its signature name, then finds the model and signature, and
    only then looks for "instances" or "inputs" (json_tensor.cc, FillPredictRequestFromJson): a missing
    model is a 404 whatever the keys, and an unknown signature its own 400."""
    assert predict_inputs(body, None).arrays is None  # the caller then says the model is not found
    named = body[:-1] + b', "signature_name": "other"}'
    assert refusal(named) == 'Serving signature name: "other" not found in signature def'
    not_a_name = refusal(b'{"signature_name": 7, "foo": 1}', None)
    assert not_a_name.endswith("'signature_name' key must be a string value.")


def test_a_signature_without_inputs_cannot_be_fed() -> None:
    """A SavedModel's __saved_model_init_op names an op to run, not tensors: TF Serving refuses it."""
    signatures = {**FLOAT, "__saved_model_init_op": {}}
    body = b'{"signature_name": "__saved_model_init_op", "instances": [[1.0]]}'
    assert refusal(body, signatures) == "Failed to get input map for signature: __saved_model_init_op"
    columns = b'{"signature_name": "__saved_model_init_op", "inputs": {}}'
    assert refusal(columns, signatures).startswith("Failed to get input map")


def test_past_the_general_limit_only_dense_numbers_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(json_bodies, "GENERAL_BYTES", IN_LOOP_BYTES + 1)
    dense = large({"instances": RNG.random((100, 784)).tolist()})
    assert predict_inputs(dense, FLOAT).arrays is not None
    strings = large({"instances": ["x" * 100] * 5000})
    assert "must be an object of dense numeric tensors" in refusal(strings)
    assert refusal(dense[:-1]).startswith("JSON Parse error: TAPE_ERROR")


# ---- the parsing process ------------------------------------------------------------------------


def test_small_bodies_are_read_here_and_large_ones_in_a_process_of_their_own() -> None:
    found = run_scenario("where_bodies_are_read", ROOT)
    assert found["small"] == found["here"] and found["first"] not in (found["here"], 0)
    assert found["second"] == found["first"]  # one worker, kept
    assert found["refused"] == ["INVALID_ARGUMENT", "no good"]  # errors come back as raised


def test_a_parsing_process_that_dies_is_unavailable_once_then_replaced() -> None:
    found = run_scenario("a_worker_killed_mid_parse", ROOT)
    assert found["code"] == "UNAVAILABLE"
    assert found["next"] not in (found["killed"], found["here"])


def test_a_key_given_twice_is_read_as_tf_serving_reads_it() -> None:
    """RapidJSON's FindMember, which TF Serving looks the keys up with, finds the first: so does the
    dense reader, here for a small body as every single-image request is."""
    body = b'{"instances": [[0.5, 1.0]], "instances": "not a tensor"}'
    read = predict_inputs(body, FLOAT)
    assert read.arrays is not None and read.arrays["images"].tolist() == [[0.5, 1.0]]
