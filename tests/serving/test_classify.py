"""serving/classify.py in process: Classify and Regress over tf.Example, without a model.

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
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import input_pb2

from serving.classify import (
    classification_json,
    classification_result,
    example_input,
    input_from_json,
    regression_json,
    regression_result,
    serialized_examples,
)
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
    assert refusal(serialized_examples, request_input) == "Input is empty"


# ---- which signatures can classify or regress ---------------------------------------------------


def test_the_examples_go_to_the_signatures_one_string_input() -> None:
    signature = meta_graph_pb2.SignatureDef()
    signature.inputs["inputs"].dtype = tf.string.as_datatype_enum
    assert example_input(signature) == "inputs"


def test_a_signature_with_other_than_one_string_input_is_refused() -> None:
    """A Predict-only signature (float images) must be refused naming why, not fed strings."""
    two = meta_graph_pb2.SignatureDef()
    two.inputs["a"].dtype = two.inputs["b"].dtype = tf.string.as_datatype_enum
    assert refusal(example_input, two) == "Expected one input Tensor."
    assert refusal(example_input, meta_graph_pb2.SignatureDef()) == "Expected one input Tensor."

    images = meta_graph_pb2.SignatureDef()
    images.inputs["images"].dtype = tf.float32.as_datatype_enum
    assert refusal(example_input, images) == (
        "this signature takes float32 input 'images', not serialized tf.Examples: use Predict, or a "
        "classification or regression signature (such as 'classify')"
    )


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
    assert classification_json(result) == {
        "results": [[["3", 0.75], ["8", 0.25]], [["1", 0.5], ["7", 0.125]]]
    }


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
    result = regression_result(np.array([0.5, -2.0, 8.0], np.float32).reshape(shape))
    assert [r.value for r in result.regressions] == [0.5, -2.0, 8.0]
    assert regression_json(result) == {"results": [0.5, -2.0, 8.0]}


def test_regression_of_more_than_one_value_per_example_is_refused() -> None:
    message = refusal(regression_result, np.zeros((3, 2), np.float32))
    assert message == (
        "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got [3, 2]"
    )


# ---- REST: examples as JSON ---------------------------------------------------------------------


def test_json_features_become_typed_feature_lists() -> None:
    """TF Serving's mapping: integers to int64_list, any fraction to float_list, strings and
    {"b64": ...} to bytes_list; a bare value is a list of one."""
    request_input = input_from_json(
        {
            "examples": [
                {
                    "count": 3,
                    "ids": [1, 2],
                    "weight": 0.5,
                    "mixed": [1, 2.5],
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
        "mixed": "float_list",
        "word": "bytes_list",
        "raw": "bytes_list",
        "words": "bytes_list",
    }
    assert features(only) == {
        "count": [3],
        "ids": [1, 2],
        "weight": [0.5],
        "mixed": [1.0, 2.5],
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
        ({"examples": [{"x": None}]}, "classify", "Feature: x has element with unexpected JSON type"),
        ({"examples": [{"x": [[1]]}]}, "classify", "Feature: x has element with unexpected JSON type"),
        ({"examples": [{"x": [1, "a"]}]}, "classify", "Feature: x has element with unexpected JSON type"),
        ({"examples": [{"x": [True, 0.5]}]}, "classify", "Feature: x has element with unexpected JSON type"),
        (
            {"examples": [{"x": {"b64": "%%"}}]},
            "classify",
            'Feature: x has a value that is neither a string nor {"b64": ...}',
        ),
        (
            {"examples": [{"x": {"text": "a"}}]},
            "classify",
            'Feature: x has a value that is neither a string nor {"b64": ...}',
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
        "mixed-kinds",
        "bool-and-fraction",
        "bad-b64",
        "other-object",
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
