"""The gRPC API through tensorflow-serving-api's own stubs, and its agreement with REST."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import grpc
import numpy as np
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tests.conftest import ServerProcess, start_server, wait_for
from tests.serving.conftest import predict_request
from tfquiet import import_tensorflow

import_tensorflow()
import tensorflow as tf  # noqa: E402
from tensorflow.core.framework import tensor_pb2  # noqa: E402


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_target) as opened:
        yield opened


@pytest.fixture(scope="module")
def predictions(channel: grpc.Channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def assert_invalid(call: Callable[..., object], request: object, fragment: str) -> None:
    """`call(request)` is refused with INVALID_ARGUMENT and a message that names `fragment`."""
    with pytest.raises(grpc.RpcError) as raised:
        call(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and fragment in raised.value.details()


def claim_shape(tensor: tensor_pb2.TensorProto, dtype: tf.DType, dims: tuple[int, ...]) -> None:
    """Give `tensor` a dtype and a shape, whatever values it carries (or does not)."""
    tensor.dtype = dtype.as_datatype_enum
    for size in dims:
        tensor.tensor_shape.dim.add(size=size)


def test_predict_matches_the_savedmodel_and_names_the_version(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub,
    images: np.ndarray,
    in_process: dict[str, np.ndarray],
) -> None:
    reply = predictions.Predict(predict_request(images), timeout=10)
    assert reply.model_spec.name == "mnist" and reply.model_spec.version.value == 1
    assert reply.model_spec.signature_name == "serving_default"
    np.testing.assert_allclose(
        tf.make_ndarray(reply.outputs["probabilities"]), in_process["probabilities"], rtol=1e-6
    )
    np.testing.assert_array_equal(tf.make_ndarray(reply.outputs["classes"]), in_process["classes"])


def test_outputs_are_written_value_by_value_unless_packing_is_asked_for(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub,
    trained_model_dir: Path,
    images: np.ndarray,
) -> None:
    """TF Serving fills float_val and int64_val by default, and tensor_content only with
    --enable_serialization_as_tensor_content: a client that reads float_val must find the values."""
    default = predictions.Predict(predict_request(images), timeout=10).outputs
    assert not default["probabilities"].tensor_content and not default["classes"].tensor_content
    assert len(default["probabilities"].float_val) == len(images) * 10
    assert list(default["classes"].int64_val) == tf.make_ndarray(default["classes"]).tolist()
    flags = ("--prefer_tflite_model", "--enable_serialization_as_tensor_content")
    with own_server(trained_model_dir, *flags) as (_, stub):
        packed = stub.Predict(predict_request(images), timeout=10).outputs["probabilities"]
    assert not packed.float_val and len(packed.tensor_content) == len(images) * 10 * 4
    np.testing.assert_allclose(
        tf.make_ndarray(packed), tf.make_ndarray(default["probabilities"]), rtol=1e-5, atol=1e-7
    )


def test_grpc_and_rest_give_the_same_probabilities(
    server: ServerProcess, predictions: prediction_service_pb2_grpc.PredictionServiceStub, images: np.ndarray
) -> None:
    over_grpc = tf.make_ndarray(
        predictions.Predict(predict_request(images), timeout=10).outputs["probabilities"]
    )
    over_rest = requests.post(
        f"{server.rest_url}/v1/models/mnist:predict", json={"instances": images.tolist()}, timeout=10
    ).json()["predictions"]
    np.testing.assert_allclose(over_grpc, [p["probabilities"] for p in over_rest], rtol=1e-6)


def test_output_filter_and_explicit_version(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub, images: np.ndarray
) -> None:
    request = predict_request(images[:2], version=1, signature_name="serving_default")
    request.output_filter.append("classes")
    reply = predictions.Predict(request, timeout=10)
    assert list(reply.outputs) == ["classes"] and reply.model_spec.version.value == 1


@pytest.mark.parametrize(
    ("request_of", "code", "message"),
    [
        (lambda x: predict_request(x, name="nope"), grpc.StatusCode.NOT_FOUND, "Latest(nope)"),
        (lambda x: predict_request(x, version=5), grpc.StatusCode.NOT_FOUND, "Specific(mnist, 5)"),
        (
            lambda x: predict_request(x, version_label="canary"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unrecognized servable version label: canary",
        ),
        (
            lambda x: predict_request(x, signature_name="nope"),
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "nope" not found.',
        ),
        (
            lambda x: predict_request(x.astype(np.float64)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "has dtype float64, expected float32",
        ),
        (lambda x: predict_request(x[:, :27]), grpc.StatusCode.INVALID_ARGUMENT, "expected [-1,28,28,1]"),
        (
            lambda x: predict_request(np.full_like(x, np.inf)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "NaN or infinite",
        ),
        (
            lambda x: predict_request(x, name=""),
            grpc.StatusCode.INVALID_ARGUMENT,
            "ModelSpec has no name specified.",
        ),
    ],
)
def test_bad_requests_get_tf_serving_status_codes(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub,
    images: np.ndarray,
    request_of: Callable[[np.ndarray], predict_pb2.PredictRequest],
    code: grpc.StatusCode,
    message: str,
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        predictions.Predict(request_of(images[:1]), timeout=10)
    assert raised.value.code() == code and message in raised.value.details()


def test_wrong_input_name_and_unknown_output(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub, images: np.ndarray
) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    request.inputs["pixels"].CopyFrom(tf.make_tensor_proto(images[:1]))
    assert_invalid(predictions.Predict, request, "Signature input alias: images(feed name: serving_default_")
    filtered = predict_request(images[:1])
    filtered.output_filter.append("logits")
    with pytest.raises(grpc.RpcError) as raised:
        predictions.Predict(filtered, timeout=10)
    assert "output tensor alias not found in signature: logits" in raised.value.details()


def test_inputs_and_outputs_that_do_not_fit_are_refused_in_tf_servings_words(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub, images: np.ndarray
) -> None:
    """predict_util.cc:51-73 (the inputs' number), then TensorFlow's GetInputValues (their names), and
    :126-146 (the outputs, each in turn)."""
    missing = predict_pb2.PredictRequest()
    missing.model_spec.name = "mnist"
    assert_invalid(
        predictions.Predict,
        missing,
        "input size does not match signature: 0!=1 len({}) != len({images}). Sent extra: {}. "
        "Missing but required: {images}.",
    )
    extra = predict_request(images[:1])
    extra.inputs["junk"].CopyFrom(tf.make_tensor_proto(images[:1]))
    assert_invalid(
        predictions.Predict, extra, "2!=1 len({images,junk}) != len({images}). Sent extra: {junk}."
    )
    misnamed = predict_pb2.PredictRequest()
    misnamed.model_spec.name = "mnist"
    misnamed.inputs["imgs"].CopyFrom(tf.make_tensor_proto(images[:1]))
    assert_invalid(
        predictions.Predict,
        misnamed,
        ") not found in request and no default value provided. Inputs expected to be in the request {imgs}, "
        "or default input alias set: ",
    )
    twice = predict_request(images[:1])
    twice.output_filter.extend(["classes", "classes", "nope"])  # the duplicate comes first
    assert_invalid(predictions.Predict, twice, "duplicate output tensor alias: classes")
    # The outputs before the inputs' dtype: that is the session's check, after (predict_util.cc:103-146).
    wrong_dtype = predict_request(images[:1].astype(np.float64))
    wrong_dtype.output_filter.append("nope")
    assert_invalid(predictions.Predict, wrong_dtype, "output tensor alias not found in signature: nope")


def test_packed_values_short_of_their_shape_are_a_parse_error_not_a_size(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub, images: np.ndarray
) -> None:
    """Packed values (tensor_content) fill nothing, so the size a shape claims for them is no reason to
    refuse: TF Serving looks the model up first, then TensorFlow finds the values short of the shape."""
    request = predict_request(images[:1])
    request.inputs["images"].tensor_shape.dim[0].size = 2**40
    assert_invalid(predictions.Predict, request, "tensor parsing error: images")
    request.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError) as raised:
        predictions.Predict(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_models_own_error_reaches_the_client_in_the_sessions_words(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    """As TF Serving's C++ session words it: the op's error, without TensorFlow's Python header
    (`Graph execution error: ... Detected at node ...`) or the function's name (`[Op:...]`)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "mnist", "classify"
    request.inputs["inputs"].CopyFrom(tf.make_tensor_proto([b"garbage"]))
    with pytest.raises(grpc.RpcError) as raised:
        predictions.Predict(request, timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith("Could not parse example input, value: 'garbage'\n\t [[{{node ")
    assert raised.value.details().endswith("}}]]")


def test_metadata_packs_the_signature_defs(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "mnist"
    reply = predictions.GetModelMetadata(request, timeout=10)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert reply.metadata["signature_def"].Unpack(signature_map)
    signature = signature_map.signature_def["serving_default"]
    assert set(signature.inputs) == {"images"} and set(signature.outputs) == {"probabilities", "classes"}
    assert reply.model_spec.version.value == 1


def test_model_status_and_health(channel: grpc.Channel) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "mnist"
    reply = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=10)
    (status,) = reply.model_version_status
    assert status.version == 1 and status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "PredictionService", "ModelService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def classification_request(images: np.ndarray, signature_name: str = "classify") -> object:
    from tensorflow_serving.apis import classification_pb2

    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "mnist"
    request.model_spec.signature_name = signature_name
    for image in images:
        example = request.input.example_list.examples.add()
        example.features.feature["image"].float_list.value.extend(image.ravel().tolist())
    return request


def test_classify_with_the_example_signature(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub,
    images: np.ndarray,
    in_process: dict[str, np.ndarray],
) -> None:
    reply = predictions.Classify(classification_request(images), timeout=10)
    assert reply.model_spec.version.value == 1 and reply.model_spec.signature_name == "classify"
    for entry, expected in zip(reply.result.classifications, in_process["probabilities"], strict=True):
        assert [c.label for c in entry.classes] == [str(d) for d in range(10)]
        np.testing.assert_allclose([c.score for c in entry.classes], expected, rtol=1e-5, atol=1e-7)


def test_classify_and_regress_refuse_signatures_that_do_not_fit(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub, images: np.ndarray
) -> None:
    """In TF Serving's words (classifier.cc:176-222, regressor.cc:170-204)."""
    from tensorflow_serving.apis import regression_pb2

    assert_invalid(
        predictions.Classify,
        classification_request(images[:1], signature_name=""),
        "No classification inputs found in SignatureDef: ",  # serving_default takes `images`
    )
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "mnist"
    regress.model_spec.signature_name = "classify"
    regress.input.example_list.examples.add()
    assert_invalid(predictions.Regress, regress, "Expected one output Tensor.")  # classes and scores
    regress.model_spec.signature_name = (
        "nope"  # INVALID_ARGUMENT here, where Predict's is FAILED_PRECONDITION
    )
    assert_invalid(predictions.Regress, regress, "No signature was found with the name: nope")
    unknown = classification_request(images[:1], signature_name="nope")
    assert_invalid(predictions.Classify, unknown, "No signature was found with the name: nope")


def multi_inference(images: np.ndarray, *tasks: tuple[str, str, str]) -> Any:
    """A MultiInferenceRequest of (model, signature, method) tasks over these images as examples."""
    from tensorflow_serving.apis import inference_pb2

    request = inference_pb2.MultiInferenceRequest()
    request.input.CopyFrom(cast(Any, classification_request(images)).input)
    for model, signature, method in tasks:
        task = request.tasks.add(method_name=f"tensorflow/serving/{method}")
        task.model_spec.name, task.model_spec.signature_name = model, signature
    return request


def test_multi_inference_answers_each_task_as_its_own_call_would(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub, images: np.ndarray
) -> None:
    reply = predictions.MultiInference(multi_inference(images, ("mnist", "classify", "classify")), timeout=10)
    alone = predictions.Classify(classification_request(images), timeout=10)
    (result,) = reply.results
    assert result.model_spec == alone.model_spec and result.classification_result == alone.result


@pytest.mark.parametrize(
    ("tasks", "code", "message"),
    [
        ((), grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified."),
        (
            (("mnist", "classify", "classify"), ("", "x", "classify")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Found ModelSpec with an empty model name.",
        ),
        (
            (("mnist", "classify", "classify"), ("other", "x", "classify")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
        ),
        (
            (("mnist", "classify", "classify"), ("mnist", "classify", "classify")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Duplicate evaluation of signature: classify",
        ),
        (
            (("mnist", "nope", "classify"),),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Requested signature not found in model graph: nope",
        ),
        (
            (("mnist", "classify", "predict"),),
            grpc.StatusCode.UNIMPLEMENTED,
            "Unsupported signature method_name: tensorflow/serving/predict",
        ),
        (
            (("mnist", "classify", "regress"),),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Expected one output Tensor.",
        ),
        (
            (("other", "classify", "classify"),),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(other)",
        ),
    ],
    ids=[
        "no-tasks",
        "empty-name",
        "two-models",
        "duplicate",
        "no-signature",
        "predict-method",
        "regress-on-classify",
        "unknown-model",
    ],
)
def test_multi_inference_refuses_in_tf_servings_order_and_words(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub,
    images: np.ndarray,
    tasks: tuple[tuple[str, str, str], ...],
    code: grpc.StatusCode,
    message: str,
) -> None:
    """multi_inference.cc:42-86 and server_core.cc:843-845, each before any model runs."""
    with pytest.raises(grpc.RpcError) as raised:
        predictions.MultiInference(multi_inference(images[:1], *tasks), timeout=10)
    assert (raised.value.code(), raised.value.details()) == (code, message)


def test_multi_inference_without_examples_is_refused(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    assert_invalid(
        predictions.MultiInference,
        multi_inference(np.zeros((0, 28, 28, 1)), ("mnist", "classify", "classify")),
        "Input is empty.",
    )


def test_a_request_without_a_model_spec_is_refused_before_anything_else(
    channel: grpc.Channel, predictions: prediction_service_pb2_grpc.PredictionServiceStub, images: np.ndarray
) -> None:
    """TF Serving's first check of every model request: "Missing ModelSpec", INVALID_ARGUMENT."""
    predict: Any = predict_request(images)
    classify: Any = classification_request(images[:1])
    for request in (predict, classify):
        request.ClearField("model_spec")
    assert_invalid(predictions.Predict, predict, "Missing ModelSpec")
    assert_invalid(predictions.Classify, classify, "Missing ModelSpec")
    assert_invalid(
        predictions.GetModelMetadata,
        get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"]),
        "Missing ModelSpec",
    )
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    assert_invalid(models.GetModelStatus, get_model_status_pb2.GetModelStatusRequest(), "Missing ModelSpec")


def test_a_tensor_claiming_a_huge_shape_is_refused_before_allocation(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    claim_shape(request.inputs["images"], tf.float32, (10**9, 28, 28, 1))
    assert_invalid(predictions.Predict, request, "more than the server's limit")  # its decoded size


@pytest.mark.parametrize(
    ("dtype", "shape", "why"),
    [
        (tf.float32, (1,) * 100, "100 dimensions, at most 64"),
        (tf.variant, (1,), "a variant tensor cannot be sent"),
        (tf.resource, (1,), "a resource tensor cannot be sent"),
        (tf.dtypes.as_dtype(120), (1,), "a resource_ref tensor cannot be sent"),  # DT_RESOURCE_REF
    ],
)
def test_a_tensor_no_model_takes_is_invalid_argument_not_internal(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub,
    dtype: tf.DType,
    shape: tuple[int, ...],
    why: str,
) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    claim_shape(request.inputs["images"], dtype, shape)
    assert_invalid(predictions.Predict, request, why)


def test_packed_content_that_does_not_fill_its_shape_is_refused(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub, images: np.ndarray
) -> None:
    request = predict_request(images[:1])
    request.inputs["images"].tensor_content = request.inputs["images"].tensor_content[:-4]
    assert_invalid(predictions.Predict, request, "3132 bytes")


def test_values_in_typed_fields_are_read_too(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub, images: np.ndarray
) -> None:
    """Clients that fill float_val instead of tensor_content (other languages' helpers do) get the
    same answer."""
    packed = predictions.Predict(predict_request(images[:1]), timeout=10)
    request = predict_request(images[:1])
    tensor = request.inputs["images"]
    tensor.ClearField("tensor_content")
    tensor.float_val.extend(images[:1].ravel().tolist())
    typed = predictions.Predict(request, timeout=10)
    np.testing.assert_allclose(
        tf.make_ndarray(typed.outputs["probabilities"]), tf.make_ndarray(packed.outputs["probabilities"])
    )


def test_a_few_values_cannot_ask_for_a_large_filled_tensor(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    tensor = request.inputs["images"]
    tensor.float_val.append(0.5)  # make_ndarray would repeat it 64 MiB worth
    claim_shape(tensor, tf.float32, (21400, 28, 28, 1))
    assert_invalid(predictions.Predict, request, "from 1 values")


def test_unknown_inputs_are_refused_before_they_are_decoded(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub, images: np.ndarray
) -> None:
    request = predict_request(images[:1])
    junk = request.inputs["junk"]
    junk.double_val.append(1.0)  # one value that make_ndarray would spread over the whole shape
    claim_shape(junk, tf.float64, (2000, 2000, 2))  # 64 MB: within the byte budget, past filling
    assert_invalid(predictions.Predict, request, "Sent extra: {junk}")


def test_grpc_and_rest_requests_share_one_byte_budget(trained_model_dir: Path, images: np.ndarray) -> None:
    """A request over the whole budget is refused as it arrives, and so is one whose tensors would take
    more than it once decoded; one that does not fit beside what other requests hold (here a REST body
    that stalls half-sent) is RESOURCE_EXHAUSTED at once, and is answered once those bytes are given
    back. A request with no tensors to claim a size (Classify's examples) holds its message's size."""
    flags = ("--max_request_bytes_in_flight=4000000", "--rest_api_timeout_in_ms=2000")
    with own_server(trained_model_dir, *flags) as (server, stub):
        with pytest.raises(grpc.RpcError) as refused:
            stub.Predict(predict_request(np.repeat(images, 200, axis=0)), timeout=30)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in str(refused.value.details())
        filled = predict_request(images[:1])  # 48 bytes on the wire, 15.7 MB once filled from one value
        filled.inputs["images"].ClearField("tensor_content")
        filled.inputs["images"].float_val.append(0.5)
        filled.inputs["images"].tensor_shape.dim[0].size = 5000
        assert_invalid(
            stub.Predict, filled, "more than the server's limit of 3500000"
        )  # an eighth kept for small
        fits_alone = predict_request(np.repeat(images, 100, axis=0))  # 2.5 MB
        examples = classification_request(np.repeat(images, 100, axis=0))  # 2.5 MB too
        with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as stalled:
            stalled.sendall(
                b"POST /v1/models/mnist:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 3000000\r\n\r\n"
                + b" " * 2_000_000
            )

            def held() -> bool:
                return refused_for_now(stub.Predict, fits_alone) and refused_for_now(stub.Classify, examples)

            wait_for(held, 10, "the stalled body to hold its bytes")
            assert stalled.recv(65536).startswith(b"HTTP/1.1 408")  # the body timed out
        answer = stub.Predict(fits_alone, timeout=30).outputs["probabilities"]
        assert [d.size for d in answer.tensor_shape.dim] == [800, 10]


@contextmanager
def own_server(
    trained_model_dir: Path, *flags: str
) -> Iterator[tuple[ServerProcess, prediction_service_pb2_grpc.PredictionServiceStub]]:
    """A server of the test's own, on the trained model with `flags`, and a Predict stub to it."""
    server = start_server("--model_name=mnist", f"--model_base_path={trained_model_dir / 'mnist'}", *flags)
    try:
        with grpc.insecure_channel(server.grpc_target) as opened:
            yield server, prediction_service_pb2_grpc.PredictionServiceStub(opened)
    finally:
        assert server.stop() == 0


def refused_for_now(call: Callable[..., object], request: object) -> bool:
    try:
        call(request, timeout=30)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
        return True
    return False


def test_a_long_name_is_answered_with_a_message_cut_as_tf_serving_cuts_it(
    predictions: prediction_service_pb2_grpc.PredictionServiceStub, images: np.ndarray
) -> None:
    """The message quotes the name; whole, 100 KB of it would pass gRPC's header limit and the client
    would see only RESOURCE_EXHAUSTED "Stream removed"."""
    with pytest.raises(grpc.RpcError) as refused:
        predictions.Predict(predict_request(images[:1], name="n" * 100_000), timeout=30)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    details = str(refused.value.details())
    assert details.startswith("Servable not found for request: Latest(nnn")
    assert details.endswith("...TRUNCATED") and len(details) == 1024 + len("...TRUNCATED")


def test_grpc_on_a_unix_socket_with_tf_servings_channel_arguments(
    trained_model_dir: Path, tmp_path: Path, images: np.ndarray
) -> None:
    """--grpc_socket_path serves gRPC on a UNIX socket beside the port (server.cc:375-389), and
    --grpc_channel_arguments reach gRPC, less one the server sets from its own flags (a warning)."""
    socket_path = tmp_path / "serving.sock"
    server = start_server(
        "--model_name=mnist",
        f"--model_base_path={trained_model_dir / 'mnist'}",
        f"--grpc_socket_path={socket_path}",
        "--grpc_channel_arguments=grpc.max_concurrent_streams=4,grpc.max_receive_message_length=10",
    )
    try:
        with grpc.insecure_channel(f"unix:{socket_path}") as unix:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(unix)
            reply = stub.Predict(predict_request(images[:2]), timeout=10)  # over 10 bytes: not applied
        assert [d.size for d in reply.outputs["probabilities"].tensor_shape.dim] == [2, 10]
    finally:
        assert server.stop() == 0
    assert server.process.stderr is not None
    assert "grpc.max_receive_message_length is set by this server's own flags" in server.process.stderr.read()


def test_grpc_connections_are_capped_as_grpc_caps_them(trained_model_dir: Path) -> None:
    """4,096 by default; an operator sets gRPC's own cap as TF Serving's do, through
    --grpc_channel_arguments: past it a new connection is closed at once (UNAVAILABLE to its client),
    and one is taken again once another closes."""
    server = start_server(
        "--model_name=mnist",
        f"--model_base_path={trained_model_dir / 'mnist'}",
        "--grpc_channel_arguments=grpc.max_allowed_incoming_connections=2",
    )

    def status_over_a_new_connection() -> grpc.Channel:
        channel = grpc.insecure_channel(server.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)])
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "mnist"
        model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=5)
        return channel

    try:
        first, second = status_over_a_new_connection(), status_over_a_new_connection()
        with pytest.raises(grpc.RpcError) as refused:
            status_over_a_new_connection()
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        first.close()
        wait_for(
            lambda: succeeds(lambda: status_over_a_new_connection().close()),
            10,
            "a connection once one has closed",
        )
        second.close()
    finally:
        assert server.stop() == 0


def succeeds(call: Callable[[], object]) -> bool:
    try:
        call()
    except grpc.RpcError:
        return False
    return True


def test_a_call_without_a_message_or_with_one_that_does_not_parse_is_answered_internal(
    trained_model_dir: Path,
) -> None:
    """gRPC C++ (TF Serving's) answers both INTERNAL at once; grpc.aio left the first unanswered for ever,
    holding the call, and answered the second UNKNOWN with a traceback in the log for each call."""
    predict = "/tensorflow.serving.PredictionService/Predict"
    with own_server(trained_model_dir, "--enable_grpc_healthcheck_service") as (server, _):
        with grpc.insecure_channel(server.grpc_target) as raw:
            for method in (
                predict,
                "/tensorflow.serving.ModelService/GetModelStatus",
                "/grpc.health.v1.Health/Check",
            ):
                with pytest.raises(grpc.RpcError) as unanswered:
                    raw.stream_unary(method)(iter(()), timeout=10)  # headers, then the end: no message
                assert (unanswered.value.code(), unanswered.value.details()) == (
                    grpc.StatusCode.INTERNAL,
                    "Couldn't initialize byte buffer reader",  # gRPC C++'s words
                )
            watch = raw.stream_stream("/grpc.health.v1.Health/Watch")(iter(()), timeout=10)
            with pytest.raises(grpc.RpcError) as unwatched:
                next(watch)
            assert unwatched.value.code() == grpc.StatusCode.INTERNAL
            with pytest.raises(grpc.RpcError) as unparsed:
                raw.unary_unary(predict)(b"\xff\xff\xff", timeout=10)
            assert unparsed.value.code() == grpc.StatusCode.INTERNAL
            assert "could not be parsed" in str(unparsed.value.details())
            # The methods still work as before, streaming answers included.
            health = health_pb2_grpc.HealthStub(raw)
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == 1
            first = next(health.Watch(health_pb2.HealthCheckRequest(), timeout=10))
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as unlisted:  # a method the servicer lacks: no traceback
                health.List(health_pb2.HealthListRequest(), timeout=10)
            assert unlisted.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # An error is its status alone, as gRPC C++ sends it: no empty message before it, which a client
        # that gives the server no flow-control window would never let through.
        for method, message in ((predict, None), ("/tensorflow.serving.ModelService/GetModelStatus", b"")):
            assert frames_of_one_call(server.grpc_port, method, message) == ["headers and status"]
        server.stop()
        log = server.process.communicate()[1]
    assert "Traceback" not in log and "DecodeError" not in log


def test_a_call_whose_message_does_not_arrive_in_time_is_answered_deadline_exceeded(
    trained_model_dir: Path,
) -> None:
    """A client that opens calls and sends nothing would hold the server's memory for as long as it
    likes (gRPC has no timeout of its own): --grpc_request_timeout_in_ms ends such a call."""
    stop = threading.Event()

    def nothing() -> Iterator[bytes]:
        stop.wait(60)
        yield from ()

    with own_server(trained_model_dir, "--grpc_request_timeout_in_ms=500") as (server, stub):
        with grpc.insecure_channel(server.grpc_target) as raw:
            started = time.monotonic()
            try:
                with pytest.raises(grpc.RpcError) as stalled:
                    raw.stream_unary("/tensorflow.serving.PredictionService/Predict")(nothing(), timeout=30)
            finally:
                stop.set()
            assert stalled.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "did not arrive within 0.5 s" in str(stalled.value.details())
            assert time.monotonic() - started < 10
        assert stub.Predict(predict_request(np.zeros((1, 28, 28, 1), np.float32)), timeout=10).outputs


def test_compressed_requests_are_answered_and_a_compression_bomb_is_refused_within_the_budget(
    trained_model_dir: Path, images: np.ndarray
) -> None:
    """gzip and deflate requests are answered as TF Serving answers them; one that inflates past the
    byte budget is refused as gRPC refuses a message over its size limit. gRPC's core used to inflate
    every compressed message whole first: 20 calls of 200 KB took the server from 0.75 to 8 GB."""
    request = predict_request(images[:2])
    with own_server(trained_model_dir, "--max_request_bytes_in_flight=4000000") as (server, plain):
        expected = plain.Predict(request, timeout=30).outputs["probabilities"]
        for compression in (grpc.Compression.Gzip, grpc.Compression.Deflate):
            with grpc.insecure_channel(server.grpc_target, compression=compression) as squeezed:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(squeezed)
                assert stub.Predict(request, timeout=30).outputs["probabilities"] == expected
                bomb = predict_request(np.zeros((100, 28, 28, 1), np.float32))
                bomb.inputs["images"].tensor_content = bytes(50_000_000)  # a few KB once compressed
                with pytest.raises(grpc.RpcError) as refused:
                    stub.Predict(bomb, timeout=30)
                assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "inflates too far" in str(refused.value.details())
        assert plain.Predict(request, timeout=30).outputs["probabilities"] == expected


def frames_of_one_call(port: int, method: str, message: bytes | None) -> list[str]:
    """What a server's answer to one gRPC call is made of, framed by hand: its HTTP/2 header blocks,
    data frames and trailers, in order, up to the end of the stream."""
    import h2.config
    import h2.connection
    import h2.events

    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    headers = [(":method", "POST"), (":scheme", "http"), (":path", method), (":authority", "x")]
    connection.send_headers(1, [*headers, ("content-type", "application/grpc"), ("te", "trailers")])
    if message is not None:
        connection.send_data(1, b"\x00" + len(message).to_bytes(4, "big") + message)
    connection.end_stream(1)
    seen: list[str] = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(connection.data_to_send())
        while not seen or seen[-1] != "end":
            for event in connection.receive_data(sock.recv(65536)):
                if isinstance(event, h2.events.ResponseReceived):
                    alone = any(name == b"grpc-status" for name, _ in event.headers)  # trailers-only
                    seen.append("headers and status" if alone else "headers")
                elif isinstance(event, h2.events.DataReceived) and event.data:
                    seen.append("data")
                elif isinstance(event, h2.events.TrailersReceived):
                    seen.append("status")
                elif isinstance(event, h2.events.StreamEnded):
                    seen.append("end")
            sock.sendall(connection.data_to_send())
    return seen[:-1]
