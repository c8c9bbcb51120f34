"""serving/classify.py and classify_json.py in process: Classify and Regress over tf.Example, without a model.

What this module builds (the serialized examples fed to the signature, the result protos, the REST JSON)
is checked by parsing it back, and each refusal by its status and message: TF Serving's wording where
the server follows it (tensorflow_serving/util/json_tensor.cc, servables/tensorflow/classifier.cc).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import orjson
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import input_pb2

from serving.classify import (
    check_example_input,
    classification_outputs,
    classification_result,
    regression_outputs,
    regression_result,
    serialized_examples,
)
from serving.classify_json import classification_json, input_from_json, regression_json
from serving.errors import ServingError

pytestmark = pytest.mark.fast


def refusal(call: Callable[..., object], *args: object) -> str:
    """The message of the INVALID_ARGUMENT that `call(*args)` must raise."""
    with pytest.raises(ServingError) as raised:
        call(*args)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return raised.value.message


def features(example: tf.train.Example) -> dict[str, list[Any]]:
    """{name: values} of an Example, whichever list kind each feature holds."""
    out = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[name] = list(getattr(feature, kind).value) if kind else []
    return out


def parsed(serialized: np.ndarray) -> list[dict[str, list[Any]]]:
    return [features(tf.train.Example.FromString(s)) for s in serialized]


def example(**values: list[Any]) -> tf.train.Example:
    made = tf.train.Example()
    for name, given in values.items():
        feature = made.features.feature[name]
        if all(isinstance(v, bytes) for v in given):
            feature.bytes_list.value.extend(given)
        elif all(isinstance(v, int) for v in given):
            feature.int64_list.value.extend(given)
        else:
            feature.float_list.value.extend(given)
    return made


# ---- serialized examples ------------------------------------------------------------------------


def test_an_example_list_is_serialized_one_string_per_example() -> None:
    """The signature's DT_STRING input gets a [batch] object array of serialized tf.Examples."""
    request_input = input_pb2.Input()
    request_input.example_list.examples.extend([example(x=[1, 2]), example(y=[b"a"])])
    serialized = serialized_examples(request_input)
    assert serialized.dtype == object and serialized.shape == (2,)
    assert parsed(serialized) == [{"x": [1, 2]}, {"y": [b"a"]}]


def test_each_example_is_merged_with_the_context_and_its_own_features_win() -> None:
    """As TF Serving's ExampleListWithContext: context features are added to every example; a feature
    the example has itself replaces the context's (it is not appended to it)."""
    request_input = input_pb2.Input()
    with_context = request_input.example_list_with_context
    with_context.context.CopyFrom(example(shared=[b"context"], scale=[0.5]))
    with_context.examples.extend([example(shared=[b"mine"]), example(other=[3])])
    assert parsed(serialized_examples(request_input)) == [
        {"shared": [b"mine"], "scale": [0.5]},
        {"shared": [b"context"], "scale": [0.5], "other": [3]},
    ]


@pytest.mark.parametrize("kind", [None, "example_list", "example_list_with_context"])
def test_an_input_without_examples_is_refused(kind: str | None) -> None:
    request_input = input_pb2.Input()
    if kind is not None:
        getattr(request_input, kind).SetInParent()
    if kind == "example_list_with_context":
        request_input.example_list_with_context.context.CopyFrom(example(x=[1]))
    assert refusal(serialized_examples, request_input) == "Input is empty."  # util.cc:167


# ---- which signatures can classify or regress ---------------------------------------------------


def signature_of(inputs: dict[str, Any], outputs: dict[str, Any]) -> meta_graph_pb2.SignatureDef:
    made = meta_graph_pb2.SignatureDef()
    for name, dtype in inputs.items():
        made.inputs[name].dtype = dtype.as_datatype_enum
    for name, dtype in outputs.items():
        made.outputs[name].dtype = dtype.as_datatype_enum
    return made


def test_a_classification_signature_fetches_its_classes_and_scores() -> None:
    both = signature_of({"inputs": tf.string}, {"scores": tf.float32, "classes": tf.string})
    assert classification_outputs(both) == ["classes", "scores"]
    assert classification_outputs(signature_of({"inputs": tf.string}, {"scores": tf.float32})) == ["scores"]
    assert regression_outputs(signature_of({"inputs": tf.string}, {"outputs": tf.float32})) == ["outputs"]


@pytest.mark.parametrize(
    ("check", "inputs", "outputs", "message"),
    [
        (
            classification_outputs,
            {"a": tf.string, "b": tf.string},
            {"scores": tf.float32},
            "Expected one input Tensor.",
        ),
        (classification_outputs, {}, {"scores": tf.float32}, "Expected one input Tensor."),
        (
            classification_outputs,
            {"inputs": tf.string},
            {"scores": tf.float32, "classes": tf.string, "x": tf.float32},
            "Expected one or two output Tensors, found 3",
        ),
        (
            classification_outputs,
            {"examples": tf.string},
            {"scores": tf.float32},
            "No classification inputs found in SignatureDef: ",
        ),
        (
            classification_outputs,
            {"inputs": tf.string},
            {"y": tf.float32},
            'Expected classification signature outputs to contain at least one of "classes" or "scores". '
            "Signature was: ",
        ),
        (
            regression_outputs,
            {"inputs": tf.string},
            {"outputs": tf.float32, "x": tf.float32},
            "Expected one output Tensor.",
        ),
        (
            regression_outputs,
            {"examples": tf.string},
            {"outputs": tf.float32},
            "No regression inputs found in SignatureDef: ",
        ),
        (
            regression_outputs,
            {"inputs": tf.string},
            {"y": tf.float32},
            "No regression outputs found in SignatureDef: ",
        ),
    ],
    ids=[
        "two-inputs",
        "no-input",
        "three-outputs",
        "input-not-inputs",
        "no-classes-or-scores",
        "two-outputs",
        "regress-input-not-inputs",
        "no-outputs",
    ],
)
def test_signatures_tf_serving_would_not_classify_or_regress_are_refused(
    check: Callable[..., object], inputs: dict[str, Any], outputs: dict[str, Any], message: str
) -> None:
    """PreProcessClassification and PreProcessRegression's checks, in their order and words
    (classifier.cc:176-222, regressor.cc:170-204); a signature is printed as protobuf's text format."""
    signature = signature_of(inputs, outputs)
    refused = refusal(check, signature)
    assert refused.startswith(message), refused
    if message.endswith(": "):
        assert refused[len(message) :] == text_format.MessageToString(signature)


def test_an_input_that_cannot_take_serialized_examples_is_refused_naming_why() -> None:
    """A Predict signature whose input is named `inputs` but holds floats: TF Serving would feed it
    strings and fail in TensorFlow; ours says what to use instead."""
    images = signature_of({"inputs": tf.float32}, {"scores": tf.float32})
    assert refusal(check_example_input, images) == (
        "this signature takes float32 input 'inputs', not serialized tf.Examples: use Predict, or a "
        "classification or regression signature (such as 'classify')"
    )
    check_example_input(signature_of({"inputs": tf.string}, {"scores": tf.float32}))


# ---- results ------------------------------------------------------------------------------------


def test_classification_pairs_each_class_with_its_score() -> None:
    outputs = {
        "classes": np.array([[b"3", b"8"], [b"1", b"7"]], dtype=object),
        "scores": np.array([[0.75, 0.25], [0.5, 0.125]], np.float32),
    }
    result = classification_result(outputs, batch=2)
    assert [[(c.label, c.score) for c in row.classes] for row in result.classifications] == [
        [("3", 0.75), ("8", 0.25)],
        [("1", 0.5), ("7", 0.125)],
    ]
    assert orjson.loads(orjson.dumps(classification_json(result))) == {
        "results": [[["3", 0.75], ["8", 0.25]], [["1", 0.5], ["7", 0.125]]]
    }
    thirds = classification_result({"scores": np.array([[1 / 3]], np.float32)}, batch=1)
    assert orjson.dumps(classification_json(thirds)) == b'{"results":[[["",0.333333343]]]}'  # float32


def test_classification_with_only_scores_or_only_classes() -> None:
    """Either output may be missing from a classification signature: the other fields stay empty."""
    scores_only = classification_result({"scores": np.array([[0.5, 0.25, 0.25]], np.float32)}, batch=1)
    assert [(c.label, c.score) for c in scores_only.classifications[0].classes] == [
        ("", 0.5),
        ("", 0.25),
        ("", 0.25),
    ]
    classes_only = classification_result({"classes": np.array([[b"a"], [b"b"]], dtype=object)}, batch=2)
    assert [[(c.label, c.score) for c in row.classes] for row in classes_only.classifications] == [
        [("a", 0.0)],
        [("b", 0.0)],
    ]


@pytest.mark.parametrize("shape", [(3,), (3, 1)])
def test_regression_takes_batch_or_batch_by_one(shape: tuple[int, ...]) -> None:
    result = regression_result(np.array([0.5, -2.0, 8.0], np.float32).reshape(shape), batch=3)
    assert [r.value for r in result.regressions] == [0.5, -2.0, 8.0]
    assert orjson.dumps(regression_json(result)) == b'{"results":[0.5,-2.0,8.0]}'


@pytest.mark.parametrize(
    ("outputs", "batch", "message"),
    [
        (
            np.zeros((3, 2), np.float32),
            3,
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got [3,2]",
        ),
        (np.zeros((2,), np.float32), 3, "Input batch size did not match output batch size: 3 vs. 2"),
        (np.zeros((3,), np.float64), 3, "Expected output Tensor of DT_FLOAT.  Got: DT_DOUBLE"),
    ],
    ids=["two-values", "batch", "double"],
)
def test_regression_outputs_tf_serving_would_not_read_are_refused(
    outputs: np.ndarray, batch: int, message: str
) -> None:
    """PostProcessRegressionResult's checks (regressor.cc:229-255)."""
    assert refusal(regression_result, outputs, batch) == message


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        (
            {"classes": np.array([b"1", b"2"], dtype=object)},
            "Expected Tensor shape: [batch_size num_classes] but got [2]",
        ),
        ({"classes": np.zeros((2, 1), np.int64)}, "Expected classes Tensor of DT_STRING. Got: DT_INT64"),
        ({"scores": np.zeros((3, 1), np.float32)}, "Expected scores output batch size of 2. Got: 3"),
        ({"scores": np.zeros((2, 1), np.float64)}, "Expected scores Tensor of DT_FLOAT. Got: DT_DOUBLE"),
        (
            {"classes": np.array([[b"a"], [b"b"]], dtype=object), "scores": np.zeros((2, 2), np.float32)},
            "Tensors class and score should match in dim_size(1). Got 1 vs. 2",
        ),
    ],
    ids=["classes-rank-1", "classes-int64", "scores-batch", "scores-double", "widths"],
)
def test_classification_outputs_tf_serving_would_not_read_are_refused(
    outputs: dict[str, np.ndarray], message: str
) -> None:
    """PostProcessClassificationResult's checks (classifier.cc:253-306): INVALID_ARGUMENT, never an
    internal error."""
    assert refusal(classification_result, outputs, 2) == message


# ---- REST: examples as JSON ---------------------------------------------------------------------


def test_json_features_become_typed_feature_lists() -> None:
    """TF Serving's mapping: integers to int64_list, numbers with a fraction to float_list, strings and
    {"b64": ...} to bytes_list; a bare value is a list of one; an empty list is a feature of no kind."""
    request_input = input_from_json(
        {
            "examples": [
                {
                    "count": 3,
                    "ids": [1, 2],
                    "weight": 0.5,
                    "none": [],
                    "word": "caf\u00e9",
                    "raw": {"b64": base64.b64encode(b"\x00\xff").decode()},
                    "words": ["a", {"b64": "Yg=="}],
                }
            ]
        },
        "classify",
    )
    assert request_input.WhichOneof("kind") == "example_list"
    (only,) = request_input.example_list.examples
    kinds = {name: f.WhichOneof("kind") for name, f in only.features.feature.items()}
    assert kinds == {
        "count": "int64_list",
        "ids": "int64_list",
        "weight": "float_list",
        "none": None,
        "word": "bytes_list",
        "raw": "bytes_list",
        "words": "bytes_list",
    }
    assert features(only) == {
        "count": [3],
        "ids": [1, 2],
        "weight": [0.5],
        "none": [],
        "word": ["caf\u00e9".encode()],
        "raw": [b"\x00\xff"],
        "words": [b"a", b"b"],
    }


def test_a_json_context_becomes_an_example_list_with_context() -> None:
    request_input = input_from_json({"context": {"c": 1}, "examples": [{"x": 2}, {"x": 3}]}, "regress")
    assert request_input.WhichOneof("kind") == "example_list_with_context"
    assert parsed(serialized_examples(request_input)) == [{"c": [1], "x": [2]}, {"c": [1], "x": [3]}]


@pytest.mark.parametrize(
    ("document", "method", "message"),
    [
        (
            {"instances": [{}]},
            "classify",
            "When method is classify, key 'examples' is expected and was not found",
        ),
        ({}, "regress", "When method is regress, key 'examples' is expected and was not found"),
        ({"examples": []}, "classify", "'examples' must be a non-empty list/array"),
        ({"examples": {"x": 1}}, "classify", "'examples' must be a non-empty list/array"),
        (
            {"examples": [{"x": 1}, [1]]},
            "classify",
            "Example must be JSON object but got JSON Array (example 1)",
        ),
        (
            {"context": "c", "examples": [{}]},
            "classify",
            "Example must be JSON object but got JSON String (context)",
        ),
        ({"examples": [True]}, "classify", "Example must be JSON object but got JSON True (example 0)"),
        ({"examples": [None]}, "classify", "Example must be JSON object but got JSON Null (example 0)"),
        ({"examples": [7]}, "classify", "Example must be JSON object but got JSON Number (example 0)"),
        ({"examples": [{"x": None}]}, "classify", "Feature: x has element with unexpected JSON type: Null"),
        ({"examples": [{"x": [[1]]}]}, "classify", "Feature: x has element with unexpected JSON type: Array"),
        (
            {"examples": [{"x": [1, "a"]}]},
            "classify",
            "Unexpected element type in feature: x expecting type: int64",
        ),
        (
            {"examples": [{"x": [True, 0.5]}]},
            "classify",
            "Unexpected element type in feature: x expecting type: int64",
        ),
        (
            {"examples": [{"x": [0, 0.5]}]},
            "classify",
            "Unexpected element type in feature: x expecting type: int64",
        ),
        (
            {"examples": [{"x": [0.5, 1]}]},
            "classify",
            "Unexpected element type in feature: x expecting type: float",
        ),
        ({"examples": [{"x": ["a", {"b64": "%%"}]}]}, "classify", "Unable to base64 decode"),
        (
            {"examples": [{"x": [0.5, {"b64": "%%"}]}]},
            "classify",
            "Unexpected element type in feature: x expecting type: float",
        ),
        (
            {"examples": [{"x": {"text": "a"}}]},
            "classify",
            "Feature: x has element with unexpected JSON type: Object",
        ),
        (
            {"examples": [{"x": {"b64": "YQ==", "y": 1}}]},
            "classify",
            "Feature: x has element with unexpected JSON type: Object",
        ),
        (
            {"examples": [{"x": 2**63}]},
            "classify",
            "Feature: x has uint64_t element. Only int64_t is supported.",
        ),
        (
            {"context": {"c": None}, "instances": [{}]},
            "classify",
            "Feature: c has element with unexpected JSON type: Null",
        ),
    ],
    ids=[
        "no-examples",
        "no-examples-regress",
        "empty",
        "not-list",
        "example-not-object",
        "context-not-object",
        "example-true",
        "example-null",
        "example-number",
        "null",
        "nested-list",
        "int-then-string",
        "bool-then-fraction",
        "int-then-fraction",
        "fraction-then-int",
        "bad-b64",
        "fraction-then-b64",
        "other-object",
        "b64-and-more",
        "uint64",
        "context-before-examples",
    ],
)
def test_bad_example_json_is_refused(document: dict[str, Any], method: str, message: str) -> None:
    assert refusal(input_from_json, document, method) == message


def test_json_booleans_are_int64_features_as_in_tf_serving() -> None:
    """TF Serving's AddValueToFeature stores JSON true/false as int64 1/0, alone or among integers."""
    (only,) = input_from_json(
        {"examples": [{"flags": [True, False], "on": True, "counts": [2, True]}]}, "classify"
    ).example_list.examples
    assert {name: f.WhichOneof("kind") for name, f in only.features.feature.items()} == {
        "flags": "int64_list",
        "on": "int64_list",
        "counts": "int64_list",
    }
    assert features(only) == {"flags": [1, 0], "on": [1], "counts": [2, 1]}
