"""What a Predict, Classify, Regress or MultiInference request asks one version to run, checked against
that version before anything runs, and the results built from what the run gives.

The front doors (inference.py) and warm-up (warmup.py) share these, as TF Serving's request handlers
and its warm-up share RunPredict, RunClassify, RunRegress and RunMultiInference
(servables/tensorflow/saved_model_warmup.cc:39-78): a warm-up record is checked as a request is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import numpy as np

from serving import DEFAULT_SIGNATURE, classify, tensors
from serving.errors import ServingError, invalid_argument
from serving.limits import Limits
from tfs_api.tensorflow_serving.apis import inference_pb2, input_pb2, model_pb2, predict_pb2

if TYPE_CHECKING:  # servable.py replays warm-up through this module
    from serving.servable import Servable


@dataclass(frozen=True)
class Run:
    """One signature run: its inputs, and the outputs wanted (empty: all of them)."""

    signature_name: str
    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Task:
    """One task of a MultiInference: the run and the kind of result it makes."""

    spec: model_pb2.ModelSpec
    run: Run
    classifies: bool


def answer_spec(spec: model_pb2.ModelSpec, version: int) -> model_pb2.ModelSpec:
    """The ModelSpec an answer carries: the request's name, its signature (the default named), and the
    version that answered."""
    answered = model_pb2.ModelSpec(name=spec.name, signature_name=spec.signature_name or DEFAULT_SIGNATURE)
    answered.version.value = version
    return answered


def predict_run(servable: Servable, request: predict_pb2.PredictRequest, limits: Limits) -> Run:
    """A Predict's tensors as arrays, refused before any is decoded when they are not the signature's:
    first by their number, in TF Serving's words (VerifyRequestInputsSize, predict_util.cc:51-73), then
    by their names, in TensorFlow's (saved_model::GetInputValues, which predict_util.cc:126-127 calls:
    tensorflow/cc/saved_model/util.cc)."""
    signature = servable.signature(request.model_spec.signature_name)
    sent, wanted = len(request.inputs), len(signature.inputs)
    if sent > wanted or (sent < wanted and not signature.defaults):
        names, expected = sorted(request.inputs), sorted(signature.inputs)
        raise invalid_argument(
            f"input size does not match signature: {sent}!={wanted} len({{{','.join(names)}}}) != "
            f"len({{{','.join(expected)}}}). Sent extra: {{{','.join(sorted(set(names) - set(expected)))}}}. "
            f"Missing but required: {{{','.join(sorted(set(expected) - set(names)))}}}."
        )
    for alias, info in signature.inputs.items():
        if alias not in request.inputs and alias not in signature.defaults:
            raise invalid_argument(
                f"Signature input alias: {alias}(feed name: {info.name}) not found in request and no "
                f"default value provided. Inputs expected to be in the request "
                f"{{{','.join(sorted(request.inputs))}}}, or default input alias set: "
                f"{','.join(sorted(signature.defaults))}"
            )
    used = set(request.inputs) & set(signature.inputs)
    if used != set(request.inputs):  # only where defaults let fewer inputs through
        raise invalid_argument(
            f"Inputs contains invalid name. Used request inputs: {','.join(sorted(used))}, "
            f"request input: {','.join(sorted(request.inputs))}"
        )
    inputs = {
        key: tensors.to_array(key, tensor, limits.tensor_bytes, limits.filled_tensor_bytes)
        for key, tensor in request.inputs.items()
    }
    return Run(request.model_spec.signature_name, inputs, tuple(request.output_filter))


def examples_run(
    servable: Servable, signature_name: str, request_input: input_pb2.Input, classifies: bool
) -> Run:
    """Classify or Regress, in TF Serving's order (classifier.cc:60-80, util.cc:167): the signature and
    its checks, then the examples."""
    if not servable.has_signature(signature_name):  # classifier.cc:157-160, regressor.cc:152-156
        raise invalid_argument(f"No signature was found with the name: {signature_name or DEFAULT_SIGNATURE}")
    signature = servable.signature(signature_name)
    wanted = classify.fetched_outputs(classifies, signature)
    examples = classify.serialized_examples(request_input)
    classify.check_example_input(signature)
    return Run(signature_name, {classify.EXAMPLES_INPUT: examples}, tuple(wanted))


def examples_in(run: Run) -> int:
    return len(run.inputs[classify.EXAMPLES_INPUT])


def multi_inference_tasks(servable: Servable, request: inference_pb2.MultiInferenceRequest) -> list[Task]:
    """Every task of a MultiInference checked, in TF Serving's order and words, before any runs
    (servables/tensorflow/multi_inference.cc:33-127). TF Serving fetches every task's outputs in one
    session run; ours runs each task's signature on the same examples in turn, with the same answers."""
    first_name = request.tasks[0].model_spec.name if request.tasks else ""
    planned: list[tuple[model_pb2.ModelSpec, str, bool, tuple[str, ...]]] = []
    for task in request.tasks:
        spec = task.model_spec
        if not spec.name:
            raise invalid_argument("Found ModelSpec with an empty model name.")
        if spec.name != first_name:
            raise invalid_argument(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name."
            )
        signature_name = spec.signature_name or DEFAULT_SIGNATURE
        if any(signature_name == name for _, name, _, _ in planned):
            raise invalid_argument(f"Duplicate evaluation of signature: {signature_name}")
        if not servable.has_signature(signature_name):
            raise invalid_argument(f"Requested signature not found in model graph: {signature_name}")
        if task.method_name not in (classify.CLASSIFY_METHOD, classify.REGRESS_METHOD):
            raise ServingError(
                grpc.StatusCode.UNIMPLEMENTED, f"Unsupported signature method_name: {task.method_name}"
            )
        classifies = task.method_name == classify.CLASSIFY_METHOD
        wanted = classify.fetched_outputs(classifies, servable.signature(signature_name))
        planned.append((spec, signature_name, classifies, tuple(wanted)))
    examples = classify.serialized_examples(request.input)
    for _, signature_name, _, _ in planned:
        classify.check_example_input(servable.signature(signature_name))
    return [
        Task(spec, Run(signature_name, {classify.EXAMPLES_INPUT: examples}, wanted), classifies)
        for spec, signature_name, classifies, wanted in planned
    ]


def task_result(task: Task, outputs: dict[str, np.ndarray], version: int) -> inference_pb2.InferenceResult:
    """One task's result, its outputs checked as Classify's or Regress's are."""
    result = inference_pb2.InferenceResult(model_spec=answer_spec(task.spec, version))
    batch = examples_in(task.run)
    if task.classifies:
        result.classification_result.CopyFrom(classify.classification_result(outputs, batch))
    else:
        result.regression_result.CopyFrom(classify.regression_result(outputs["outputs"], batch))
    return result
