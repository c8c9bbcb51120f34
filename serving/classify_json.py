"""TF Serving's REST :classify and :regress bodies and answers (util/json_tensor.cc:736-849,1062-1125):
examples as JSON objects of features, each element checked as TF Serving checks it, and the results
in TF Serving's digits. Apart from serving/classify.py, which the trainer's image loads without the
REST door's packages.
"""

from __future__ import annotations

from typing import Any

import orjson

from serving.errors import invalid_argument
from serving.json_bodies import GENERAL_BYTES
from serving.json_decimals import decimal
from serving.json_document import base64_bytes, parse_json
from tfs_api.tensorflow.core.example import example_pb2, feature_pb2
from tfs_api.tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2

_KINDS = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}  # as TF Serving names them
INT64_MAX = 2**63 - 1


def _feature(name: str, value: Any) -> feature_pb2.Feature:
    """A JSON feature value (or list of values) as a tf.train.Feature, element by element as TF Serving's
    AddValueToFeature builds it (util/json_tensor.cc:736-792): the first element fixes the list's kind
    and an element of another kind is refused (`[0, 0.5]` too: an integer is int64, a number with a
    fraction or exponent float); JSON true/false are int64 1/0, as a tf.Example has no boolean list;
    an empty list has no kind."""
    feature = feature_pb2.Feature()
    for element in value if isinstance(value, list) else [value]:
        kind = _element_kind(name, element)
        held = feature.WhichOneof("kind")
        if held is not None and held != kind:
            raise invalid_argument(
                f"Unexpected element type in feature: {name} expecting type: {_KINDS[held]}"
            )
        getattr(feature, kind).value.append(_element_value(name, element))
    return feature


def _element_kind(name: str, element: Any) -> str:
    if isinstance(element, (bool, int)):  # bool is an int: True is 1, False is 0
        return "int64_list"
    if isinstance(element, float):
        return "float_list"
    if isinstance(element, str) or _is_base64_object(element):
        return "bytes_list"
    raise invalid_argument(f"Feature: {name} has element with unexpected JSON type: {_json_type(element)}")


def _is_base64_object(element: Any) -> bool:
    """`{"b64": "..."}` and nothing else (IsValBase64Object, util/json_tensor.cc:358-369)."""
    return isinstance(element, dict) and list(element) == ["b64"] and isinstance(element["b64"], str)


def _element_value(name: str, element: Any) -> Any:
    if isinstance(element, str):
        return element.encode()
    if isinstance(element, dict):
        return base64_bytes(element["b64"])
    if isinstance(element, int) and element > INT64_MAX:  # RapidJSON holds up to uint64 as an integer
        raise invalid_argument(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
    return int(element) if isinstance(element, bool) else element


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
    """The `{"context": {...}, "examples": [{...}, ...]}` body of :classify or :regress, read in TF
    Serving's order: the context, then the examples (util/json_tensor.cc:826-858)."""
    context = _example(document["context"], "context") if "context" in document else None
    if "examples" not in document:
        raise invalid_argument(f"When method is {method}, key 'examples' is expected and was not found")
    if not isinstance(document["examples"], list) or not document["examples"]:
        raise invalid_argument("'examples' must be a non-empty list/array")
    examples = [_example(e, f"example {i}") for i, e in enumerate(document["examples"])]
    request_input = input_pb2.Input()
    if context is not None:
        request_input.example_list_with_context.context.CopyFrom(context)
        request_input.example_list_with_context.examples.extend(examples)
    else:
        request_input.example_list.examples.extend(examples)
    return request_input


def classification_json(result: classification_pb2.ClassificationResult) -> dict[str, Any]:
    """`{"results": [[[label, score], ...], ...]}`, each score a float32 in TF Serving's digits."""
    return {
        "results": [
            [[c.label, orjson.Fragment(decimal(c.score))] for c in entry.classes]
            for entry in result.classifications
        ]
    }


def regression_json(result: regression_pb2.RegressionResult) -> dict[str, Any]:
    """`{"results": [value, ...]}`, each a float32 in TF Serving's digits."""
    return {"results": [orjson.Fragment(decimal(r.value)) for r in result.regressions]}
