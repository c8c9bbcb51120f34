"""The gRPC front door: tensorflow-serving-api's PredictionService and ModelService on the shared layer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving.errors import ServingError
from serving.inference import Inference, version_of

log = logging.getLogger("serving")

Reply = TypeVar("Reply")
MAX_MESSAGE_BYTES = 2**31 - 1  # TF Serving lifts gRPC's 4 MiB default as far as it goes


def _answer(context: grpc.ServicerContext, call: Callable[[], Reply]) -> Reply:
    """Run a call; a ServingError becomes the RPC's status, anything else INTERNAL, never a crash."""
    try:
        return call()
    except ServingError as err:
        context.abort(err.code, err.message)
    except Exception as err:
        log.exception("gRPC call failed")
        context.abort(grpc.StatusCode.INTERNAL, f"internal error: {err}")
    raise AssertionError("unreachable: abort raises")


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, inference: Inference) -> None:
        self.inference = inference

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return _answer(context, lambda: self.inference.predict_proto(request))

    def Classify(
        self, request: classification_pb2.ClassificationRequest, context: grpc.ServicerContext
    ) -> Any:  # noqa: N802
        return _answer(context, lambda: self.inference.classify_proto(request))

    def Regress(self, request: regression_pb2.RegressionRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return _answer(context, lambda: self.inference.regress_proto(request))

    def GetModelMetadata(  # noqa: N802
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> Any:
        version, label = version_of(request.model_spec)
        return _answer(
            context,
            lambda: self.inference.metadata(request.model_spec.name, version, label, request.metadata_field),
        )


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, inference: Inference, reload_config: Callable[[Any], None]) -> None:
        self.inference = inference
        self.reload_config = reload_config

    def GetModelStatus(  # noqa: N802
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> Any:
        version, _ = version_of(request.model_spec)  # TF Serving ignores a label here
        return _answer(context, lambda: self.inference.status(request.model_spec.name, version))

    def HandleReloadConfigRequest(  # noqa: N802
        self, request: model_management_pb2.ReloadConfigRequest, context: grpc.ServicerContext
    ) -> Any:
        def reload() -> model_management_pb2.ReloadConfigResponse:
            self.reload_config(request.config)
            return model_management_pb2.ReloadConfigResponse()

        return _answer(context, reload)


def build_grpc_server(
    address: str,
    inference: Inference,
    reload_config: Callable[[Any], None],
    workers: int,
    health_servicer: health.HealthServicer | None,
) -> grpc.Server:
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),  # a port another server holds is an error, not a silent share
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"), options=options
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(inference), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(inference, reload_config), server)
    if health_servicer is not None:
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        server.add_insecure_port(address)
    except RuntimeError:
        raise OSError(
            f"cannot listen for gRPC on {address}: the address is in use or not available"
        ) from None
    return server
