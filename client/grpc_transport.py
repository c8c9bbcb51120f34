"""TF Serving's gRPC API with tensorflow-serving-api's stubs, over one channel per target."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import unquote

import numpy as np
from google.protobuf.message import Message

from client.transport import ServingClientError, Transport, VersionStatus
from contract.signature import INPUT, PROBABILITIES
from tfs_api.tensorflow.core.framework import tensor_pb2, types_pb2
from tfs_api.tensorflow.core.protobuf import error_codes_pb2
from tfs_api.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

T = TypeVar("T")


# gRPC waits up to two minutes between attempts to reach a server that has gone (its default backoff):
# a long-lived client, such as the dashboard's, then said "not answering" for seconds to minutes after
# the server was back.
MAX_RECONNECT_BACKOFF_MS = 2000


@functools.cache
def _channel(target: str) -> Any:
    """One channel per target for the whole process: gRPC multiplexes every call over it."""
    import grpc

    return grpc.insecure_channel(
        target, options=[("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS)]
    )


def _as_json(message: Message) -> dict:
    from google.protobuf import json_format

    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _pack_floats(array: np.ndarray, proto: tensor_pb2.TensorProto) -> None:
    """A float32 TensorProto written directly, its values as packed bytes (tf.make_tensor_proto costs
    tens of microseconds a call for the same result)."""
    proto.dtype = types_pb2.DT_FLOAT
    for size in array.shape:
        proto.tensor_shape.dim.add().size = size
    proto.tensor_content = np.ascontiguousarray(array, dtype="<f4").tobytes()


def _unpack_floats(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """A float32 TensorProto's values, in float_val (as TF Serving answers by default) or packed in
    tensor_content (--enable_serialization_as_tensor_content); a shape its values do not fill is an
    error in one line."""
    shape = [dim.size for dim in proto.tensor_shape.dim]
    packed = proto.tensor_content
    count = len(packed) // 4 if packed else len(proto.float_val)
    if (packed and len(packed) % 4) or min(shape, default=0) < 0 or count != math.prod(shape):
        raise ServingClientError(
            "UNKNOWN", f"the server answered a tensor of shape {shape} that its values do not fill"
        )
    values = np.frombuffer(packed, dtype="<f4") if packed else np.asarray(proto.float_val, dtype=np.float32)
    return values.reshape(shape)


class GrpcTransport(Transport):
    """tensorflow-serving-api's stubs over one shared channel."""

    def __init__(self, target: str) -> None:
        self.target = target
        channel = _channel(target)
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(channel)

    @staticmethod
    def _spec(spec: model_pb2.ModelSpec, model: str, version: int | None, label: str | None) -> None:
        spec.name = model
        if version is not None:
            spec.version.value = version
        elif label is not None:
            spec.version_label = label

    def _call(self, method: Callable[..., T], request: Message, timeout: float) -> T:
        import grpc

        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as err:
            details = err.details() or err.code().name
            if err.code() == grpc.StatusCode.UNAVAILABLE:  # the addresses tried, as `ipv6:%5B::1%5D:8500`
                details = unquote(details)
            if details == "Deadline Exceeded":  # gRPC's own words, when the server said nothing
                details = f"no answer from {self.target} in {timeout}s"
            raise ServingClientError(err.code().name, details) from None

    def predict(
        self, images: np.ndarray, model: str, version: int | None, label: str | None, timeout: float
    ) -> tuple[np.ndarray, int]:
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, model, version, label)
        _pack_floats(images, request.inputs[INPUT])
        request.output_filter.append(PROBABILITIES)
        reply = self._call(self._predictions.Predict, request, timeout)
        if PROBABILITIES not in reply.outputs or reply.outputs[PROBABILITIES].dtype != types_pb2.DT_FLOAT:
            raise ServingClientError(
                "UNKNOWN",
                f"{self.target} answered no float {PROBABILITIES!r} output: is it serving an MNIST model?",
            )
        return _unpack_floats(reply.outputs[PROBABILITIES]), reply.model_spec.version.value

    def status(self, model: str, version: int | None, timeout: float) -> list[VersionStatus]:
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, model, version, None)
        reply = self._call(self._models.GetModelStatus, request, timeout)
        state_name = get_model_status_pb2.ModelVersionStatus.State.Name
        return [
            VersionStatus(
                s.version,
                state_name(s.state),
                error_codes_pb2.Code.Name(s.status.error_code),
                s.status.error_message,
            )
            for s in reply.model_version_status
        ]

    def metadata(self, model: str, version: int | None, label: str | None, timeout: float) -> dict:
        metadata_pb2 = get_model_metadata_pb2
        request = metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, model, version, label)
        reply = self._call(self._predictions.GetModelMetadata, request, timeout)
        signatures = metadata_pb2.SignatureDefMap()
        reply.metadata["signature_def"].Unpack(signatures)
        return {"model_spec": _as_json(reply.model_spec), "metadata": {"signature_def": _as_json(signatures)}}
