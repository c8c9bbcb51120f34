"""TF Serving's Classify and Regress APIs over signatures that take serialized tf.Examples.

A classification signature has one input, `inputs` (DT_STRING: the serialized examples), and outputs
`classes` (labels, DT_STRING [batch, n]) and/or `scores` (DT_FLOAT [batch, n]); a regression signature
has the same input and one output, `outputs` (DT_FLOAT [batch] or [batch, 1]). Both are checked as TF
Serving checks them, before the run and after it. Over REST, examples come as JSON objects of features
(serving/classify_json.py).
"""

from __future__ import annotations

import numpy as np
from google.protobuf import text_format

from serving.errors import invalid_argument
from serving.tensors import dtype_name, enum_of
from tfs_api.tensorflow.core.example import example_pb2
from tfs_api.tensorflow.core.framework import types_pb2
from tfs_api.tensorflow.core.protobuf import meta_graph_pb2
from tfs_api.tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2

EXAMPLES_INPUT = "inputs"  # the one input of a classification or regression signature (kClassifyInputs)
# A MultiInference task's method_name (TensorFlow's kClassifyMethodName and kRegressMethodName).
CLASSIFY_METHOD, REGRESS_METHOD = "tensorflow/serving/classify", "tensorflow/serving/regress"


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
        raise invalid_argument("Input is empty.")
    if not examples:
        raise invalid_argument("Input is empty.")
    return np.array([e.SerializeToString() for e in examples], dtype=object)


def classification_outputs(signature: meta_graph_pb2.SignatureDef) -> list[str]:
    """The outputs Classify fetches, after TF Serving's checks of the signature
    (PreProcessClassification, servables/tensorflow/classifier.cc:176-222)."""
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise invalid_argument(f"Expected one or two output Tensors, found {len(signature.outputs)}")
    if EXAMPLES_INPUT not in signature.inputs:
        raise invalid_argument(f"No classification inputs found in SignatureDef: {_debug(signature)}")
    wanted = [name for name in ("classes", "scores") if name in signature.outputs]
    if not wanted:
        raise invalid_argument(
            'Expected classification signature outputs to contain at least one of "classes" or "scores". '
            f"Signature was: {_debug(signature)}"
        )
    return wanted


def regression_outputs(signature: meta_graph_pb2.SignatureDef) -> list[str]:
    """The output Regress fetches, after TF Serving's checks of the signature (PreProcessRegression,
    servables/tensorflow/regressor.cc:170-204)."""
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if EXAMPLES_INPUT not in signature.inputs:
        raise invalid_argument(f"No regression inputs found in SignatureDef: {_debug(signature)}")
    if "outputs" not in signature.outputs:
        raise invalid_argument(f"No regression outputs found in SignatureDef: {_debug(signature)}")
    return ["outputs"]


def fetched_outputs(classifies: bool, signature: meta_graph_pb2.SignatureDef) -> list[str]:
    return classification_outputs(signature) if classifies else regression_outputs(signature)


def check_example_input(signature: meta_graph_pb2.SignatureDef) -> None:
    """Ours: an `inputs` that is not DT_STRING cannot take serialized examples. TF Serving feeds them
    anyway and TensorFlow refuses the run; this says why in words a client can act on."""
    info = signature.inputs[EXAMPLES_INPUT]
    if info.dtype != types_pb2.DT_STRING:
        raise invalid_argument(
            f"this signature takes {dtype_name(info.dtype)} input '{EXAMPLES_INPUT}', not serialized "
            "tf.Examples: use Predict, or a classification or regression signature (such as 'classify')"
        )


def _debug(signature: meta_graph_pb2.SignatureDef) -> str:
    """The signature as protobuf's DebugString prints it: its text format."""
    return text_format.MessageToString(signature)


def _tensor_dtype(array: np.ndarray) -> str:
    return "DT_STRING" if array.dtype == object else types_pb2.DataType.Name(enum_of(array.dtype))


def _shape(array: np.ndarray) -> str:
    """TensorShape::DebugString: `[2,3]`."""
    return "[" + ",".join(str(size) for size in array.shape) + "]"


def classification_result(
    outputs: dict[str, np.ndarray], batch: int
) -> classification_pb2.ClassificationResult:
    """The signature's classes and/or scores, checked as TF Serving checks them
    (PostProcessClassificationResult, servables/tensorflow/classifier.cc:224-322)."""
    classes, scores = outputs.get("classes"), outputs.get("scores")
    for name, output, dtype in (("classes", classes, "DT_STRING"), ("scores", scores, "DT_FLOAT")):
        if output is None:
            continue
        if output.ndim != 2:
            raise invalid_argument(
                f"Expected Tensor shape: [batch_size num_classes] but got {_shape(output)}"
            )
        if _tensor_dtype(output) != dtype:
            raise invalid_argument(f"Expected {name} Tensor of {dtype}. Got: {_tensor_dtype(output)}")
        if output.shape[0] != batch:
            raise invalid_argument(f"Expected {name} output batch size of {batch}. Got: {output.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(
            "Tensors class and score should match in dim_size(1). "
            f"Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    width = next(output.shape[1] for output in (classes, scores) if output is not None)
    result = classification_pb2.ClassificationResult()
    for row in range(batch):
        entry = result.classifications.add()
        for column in range(width):
            label = classes[row, column] if classes is not None else b""
            score = float(scores[row, column]) if scores is not None else 0.0
            entry.classes.add(label=label.decode(errors="replace"), score=score)
    return result


def regression_result(outputs: np.ndarray, batch: int) -> regression_pb2.RegressionResult:
    """The signature's `outputs`, checked as TF Serving checks them (PostProcessRegressionResult,
    servables/tensorflow/regressor.cc:206-262)."""
    if not (outputs.ndim == 1 or (outputs.ndim == 2 and outputs.shape[1] == 1)):
        raise invalid_argument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
            f"but got {_shape(outputs)}"
        )
    if outputs.shape[0] != batch:
        raise invalid_argument(
            f"Input batch size did not match output batch size: {batch} vs. {outputs.shape[0]}"
        )
    if _tensor_dtype(outputs) != "DT_FLOAT":
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {_tensor_dtype(outputs)}")
    result = regression_pb2.RegressionResult()
    for value in outputs.reshape(batch):
        result.regressions.add(value=float(value))
    return result
