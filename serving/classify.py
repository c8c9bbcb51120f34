"""TF Serving's Classify and Regress APIs over signatures that take serialized tf.Examples.

A classification signature has one DT_STRING input (the serialized examples) and outputs `classes`
(labels, DT_STRING [batch, n]) and/or `scores` (DT_FLOAT [batch, n]); a regression signature has one
`outputs` (DT_FLOAT [batch] or [batch, 1]). Over REST, examples come as JSON objects of features.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np

from serving.errors import invalid_argument
from serving.json_bodies import GENERAL_BYTES
from serving.json_document import parse_json
from serving.tensors import dtype_name
from tfs_api.tensorflow.core.example import example_pb2, feature_pb2
from tfs_api.tensorflow.core.framework import types_pb2
from tfs_api.tensorflow.core.protobuf import meta_graph_pb2
from tfs_api.tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2


def serialized_examples(request_input: input_pb2.Input) -> np.ndarray:
    """The request's examples serialized, each merged with the context when there is one."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        examples = list(request_input.example_list.examples)
    elif kind == "example_list_with_context":
        with_context = request_input.example_list_with_context
        examples = []
        for example in with_context.examples:
            merged = example_pb2.Example()
            merged.CopyFrom(with_context.context)
            merged.MergeFrom(example)
            examples.append(merged)
    else:
        raise invalid_argument("Input is empty")
    if not examples:
        raise invalid_argument("Input is empty")
    return np.array([e.SerializeToString() for e in examples], dtype=object)


def example_input(signature: meta_graph_pb2.SignatureDef) -> str:
    """The name of the signature's one DT_STRING input, or why it cannot classify or regress."""
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    ((name, info),) = signature.inputs.items()
    if info.dtype != types_pb2.DT_STRING:
        raise invalid_argument(
            f"this signature takes {dtype_name(info.dtype)} input '{name}', not serialized "
            "tf.Examples: use Predict, or a classification or regression signature (such as 'classify')"
        )
    return name


def classification_result(
    outputs: dict[str, np.ndarray], batch: int
) -> classification_pb2.ClassificationResult:
    classes, scores = outputs.get("classes"), outputs.get("scores")
    width = next(output.shape[1] for output in (classes, scores) if output is not None)
    result = classification_pb2.ClassificationResult()
    for row in range(batch):
        entry = result.classifications.add()
        for column in range(width):
            label = classes[row, column].decode() if classes is not None else ""
            score = float(scores[row, column]) if scores is not None else 0.0
            entry.classes.add(label=label, score=score)
    return result


def regression_result(outputs: np.ndarray) -> regression_pb2.RegressionResult:
    values = outputs.reshape(len(outputs), -1)
    if values.shape[1] != 1:
        raise invalid_argument(
            f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
            f"but got {list(outputs.shape)}"
        )
    result = regression_pb2.RegressionResult()
    for value in values[:, 0]:
        result.regressions.add(value=float(value))
    return result


def _feature(name: str, value: Any) -> feature_pb2.Feature:
    """A JSON feature value (or list of values) as a tf.train.Feature. JSON true/false are int64 1/0,
    as TF Serving's AddValueToFeature stores them: a tf.Example has no boolean list."""
    values = value if isinstance(value, list) else [value]
    if all(isinstance(v, (str, dict)) for v in values):
        try:
            raw = [
                base64.b64decode(v["b64"], validate=True) if isinstance(v, dict) else v.encode()
                for v in values
            ]
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise invalid_argument(
                f'Feature: {name} has a value that is neither a string nor {{"b64": ...}}'
            ) from None
        return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=raw))
    if all(isinstance(v, int) for v in values):  # bool is an int: True is 1, False is 0
        return feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[int(v) for v in values]))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return feature_pb2.Feature(float_list=feature_pb2.FloatList(value=values))
    raise invalid_argument(f"Feature: {name} has element with unexpected JSON type")


def _json_type(value: Any) -> str:
    """A JSON value's type as TF Serving names it (rapidjson's names, JsonTypeString)."""
    if isinstance(value, bool) or value is None:
        return str(value) if value is not None else "Null"
    names = {dict: "Object", list: "Array", str: "String"}
    return next((name for kind, name in names.items() if isinstance(value, kind)), "Number")


def _example(document: Any, where: str) -> example_pb2.Example:
    if not isinstance(document, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {_json_type(document)} ({where})")
    example = example_pb2.Example()
    for name, value in document.items():
        example.features.feature[name].CopyFrom(_feature(name, value))
    return example


def request_from_json(body: bytes, method: str) -> tuple[str, input_pb2.Input]:
    """The signature name and examples of a :classify or :regress body. Examples are read with Python
    objects, at about twenty bytes per body byte, so no body over GENERAL_BYTES is read."""
    if len(body) > GENERAL_BYTES:
        raise invalid_argument(f"a {method} request body may hold at most {GENERAL_BYTES} bytes")
    document = parse_json(body)
    if not isinstance(document, dict):
        raise invalid_argument("the request body must be a JSON object")
    signature_name = document.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise invalid_argument("'signature_name' key must be a string value.")
    return signature_name, input_from_json(document, method)


def input_from_json(document: dict[str, Any], method: str) -> input_pb2.Input:
    """The `{"context": {...}, "examples": [{...}, ...]}` body of :classify or :regress."""
    if "examples" not in document:
        raise invalid_argument(f"When method is {method}, key 'examples' is expected and was not found")
    if not isinstance(document["examples"], list) or not document["examples"]:
        raise invalid_argument("'examples' must be a non-empty list/array")
    examples = [_example(e, f"example {i}") for i, e in enumerate(document["examples"])]
    request_input = input_pb2.Input()
    if "context" in document:
        request_input.example_list_with_context.context.CopyFrom(_example(document["context"], "context"))
        request_input.example_list_with_context.examples.extend(examples)
    else:
        request_input.example_list.examples.extend(examples)
    return request_input


def classification_json(result: classification_pb2.ClassificationResult) -> dict[str, Any]:
    return {"results": [[[c.label, c.score] for c in entry.classes] for entry in result.classifications]}


def regression_json(result: regression_pb2.RegressionResult) -> dict[str, Any]:
    return {"results": [r.value for r in result.regressions]}
