"""The gRPC front door: tensorflow-serving-api's PredictionService and ModelService on grpc.aio.

Calls are coroutines on the server's one event loop: parsing and answering happen there, model calls on
the model pool (see Inference), and a reload, which loads models for seconds, on a thread of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from serving import tensors
from serving.errors import ServingError, invalid_argument
from serving.grpc_calls import RequestReader, RequestReadingServer, message_size, refuse
from serving.inference import Inference, version_of
from tfs_api.tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

log = logging.getLogger("serving")

Reply = TypeVar("Reply")
ModelRequest = (
    predict_pb2.PredictRequest | classification_pb2.ClassificationRequest | regression_pb2.RegressionRequest
)
MAX_MESSAGE_BYTES = 2**31 - 1  # TF Serving lifts gRPC's 4 MiB default as far as it goes


async def _answer(context: grpc.aio.ServicerContext, call: Awaitable[Reply]) -> Reply | None:
    """Await a call; a ServingError becomes the RPC's status, anything else INTERNAL, never a crash.
    The call is marked refused and None returned: the method's wrapper ends it, once this frame and the
    method's, which hold the request, are gone (serving/grpc_calls.py says why)."""
    try:
        return await call
    except ServingError as err:
        code, message = err.code, err.message
    except Exception as err:
        log.exception("gRPC call failed")
        code, message = grpc.StatusCode.INTERNAL, f"internal error: {err}"
    refuse(context, code, message)
    return None


def _checked_spec(
    request: ModelRequest
    | get_model_metadata_pb2.GetModelMetadataRequest
    | get_model_status_pb2.GetModelStatusRequest,
) -> None:
    """TF Serving refuses a request with no ModelSpec before anything else (predict_impl.cc:37-41,
    classification_service.cc, regression_service.cc, get_model_metadata_impl.cc:76-79,
    get_model_status_impl.cc:69-71)."""
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")


async def _now(call: Callable[[], Reply]) -> Reply:
    """A quick call that needs no model (status, metadata), as an awaitable for _answer."""
    return call()


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict, Classify and Regress count in the request metrics; metadata does not (as in TF Serving)."""

    def __init__(self, inference: Inference) -> None:
        self.inference = inference

    async def _counted(
        self, request: ModelRequest, api: str, call: Callable[[Any], Awaitable[Reply]]
    ) -> Reply:
        """`call(request)` for a Predict, Classify or Regress request, counted in the metrics, its
        request's bytes held in the server's budget while it is answered (refused at once past it: gRPC
        has read the whole message already, but the request and its tensors are let go of at once).
        A Predict holds its tensors' decoded size when that is more, as a few bytes may claim it (a
        shape filled from one value). A request without a ModelSpec is refused first, as TF Serving
        refuses it before anything else."""
        with self.inference.observed(request.model_spec.name, "grpc", api):
            _checked_spec(request)
            size = message_size.get()
            if isinstance(request, predict_pb2.PredictRequest):
                size = max(size, sum(tensors.decoded_bytes(tensor) for tensor in request.inputs.values()))
            with self.inference.request_bytes.holding(size):
                return await call(request)

    async def Predict(  # noqa: N802
        self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        return await _answer(context, self._counted(request, "Predict", self.inference.predict_proto))

    async def Classify(  # noqa: N802
        self, request: classification_pb2.ClassificationRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        return await _answer(context, self._counted(request, "Classify", self.inference.classify_proto))

    async def Regress(  # noqa: N802
        self, request: regression_pb2.RegressionRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        return await _answer(context, self._counted(request, "Regress", self.inference.regress_proto))

    async def MultiInference(  # noqa: N802
        self, request: inference_pb2.MultiInferenceRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        """Classify and regress tasks on one set of examples; its bytes held in the server's budget, but
        not counted in the request metrics, as TF Serving does not count it."""

        async def infer() -> inference_pb2.MultiInferenceResponse:
            with self.inference.request_bytes.holding(message_size.get()):
                return await self.inference.multi_inference_proto(request)

        return await _answer(context, infer())

    async def GetModelMetadata(  # noqa: N802
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        def metadata() -> get_model_metadata_pb2.GetModelMetadataResponse:
            _checked_spec(request)
            version, label = version_of(request.model_spec)
            return self.inference.metadata(request.model_spec.name, version, label, request.metadata_field)

        return await _answer(context, _now(metadata))


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, inference: Inference, reload_config: Callable[[Any], Awaitable[None]]) -> None:
        self.inference = inference
        self.reload_config = reload_config

    async def GetModelStatus(  # noqa: N802
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        def status() -> get_model_status_pb2.GetModelStatusResponse:
            _checked_spec(request)
            version, _ = version_of(request.model_spec)  # TF Serving ignores a label here
            return self.inference.status(request.model_spec.name, version)

        return await _answer(context, _now(status))

    async def HandleReloadConfigRequest(  # noqa: N802
        self, request: model_management_pb2.ReloadConfigRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        async def reload() -> model_management_pb2.ReloadConfigResponse:
            await self.reload_config(request.config)
            answer = model_management_pb2.ReloadConfigResponse()
            answer.status.SetInParent()  # OK, present, as TF Serving sets it (model_service_impl.cc:78-79)
            return answer

        return await _answer(context, reload())


def build_grpc_server(
    addresses: list[str],
    inference: Inference,
    reload_config: Callable[[Any], Awaitable[None]],
    health_servicer: health.aio.HealthServicer | None,
    channel_arguments: Sequence[tuple[str, int | str]] = (),
) -> grpc.aio.Server:
    """The server, bound to each address (`host:port`, `unix:path`) but not started; call on the loop
    it will serve from. `channel_arguments` (--grpc_channel_arguments) go to gRPC as given, less those
    the server sets itself: its caps on connections, calls at once and calls waiting
    (serving/limits.py, which hold an operator's values for them) and the options its own flags set."""
    own = [
        # No request larger than the byte budget is ever answered, so gRPC refuses one as its length
        # arrives (RESOURCE_EXHAUSTED) instead of reading it whole first.
        ("grpc.max_receive_message_length", min(MAX_MESSAGE_BYTES, inference.request_bytes.largest)),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),  # a port another server holds is an error, not a silent share
        # Compressed messages are inflated by the server, within its byte budget (serving/inflate.py).
        ("grpc.per_message_decompression", 0),
    ]
    for key, _ in channel_arguments:
        if key in dict(own):
            log.warning("--grpc_channel_arguments: %s is set by this server's own flags; ignored", key)
    caps = inference.limits.grpc_caps()
    options = [*(item for item in channel_arguments if item[0] not in dict(own + caps)), *caps, *own]
    server = grpc.aio.server(options=options)
    # Every call's message read with a deadline, and a call without one answered (serving/grpc_calls.py).
    services = RequestReadingServer(
        server, RequestReader(inference.limits.grpc_request_s, inference.request_bytes)
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(inference), services
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelService(inference, reload_config), services
    )
    if health_servicer is not None:
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, services)
    for address in addresses:
        try:
            server.add_insecure_port(address)
        except RuntimeError:
            raise OSError(
                f"cannot listen for gRPC on {address}: the address is in use or not available"
            ) from None
    return server
