"""What both front doors do, once: find the version a request names, run it, and say what happened.

gRPC and REST differ only in how a request is encoded; they share this layer, so the same request
gets the same answer, the same error and the same metrics on either.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from google.protobuf import json_format, wrappers_pb2
from google.protobuf.message import Message

from serving import classify, classify_json, json_bodies, rest_json, runs, tensors
from serving.errors import ServingError, invalid_argument
from serving.limits import ByteBudget, Limits
from serving.servable import Servable
from serving.store import ModelStore
from tfs_api.tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
    status_pb2,
)

# (model, version, api, method, status code name, seconds)
RequestObserver = Callable[[str, str, str, str, float], None]  # model, door, API, status, seconds
RuntimeObserver = Callable[[str, str, str, float], None]  # model, API, runtime, seconds


def version_of(spec: model_pb2.ModelSpec) -> tuple[int | None, str | None]:
    """The version or the label a ModelSpec names (neither: the latest available)."""
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return spec.version.value, None
    if choice == "version_label":
        return None, spec.version_label
    return None, None


def proto_json(message: Message) -> dict[str, Any]:
    """A proto as TF Serving's REST API prints it: .proto field names, fields at their defaults too."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


class Inference:
    def __init__(
        self,
        store: ModelStore,
        limits: Limits,
        observe: RequestObserver = lambda *_: None,
        observe_runtime: RuntimeObserver = lambda *_: None,
        packed_outputs: bool = False,
    ) -> None:
        """`observe` hears of every request (model, door, API, status code, seconds), `observe_runtime`
        of the model call inside each (model, API, runtime, seconds); `packed_outputs`: Predict's gRPC
        outputs as tensor_content (tensors.to_tensor)."""
        self.store, self.limits, self.packed_outputs = store, limits, packed_outputs
        self.request_bytes = ByteBudget(limits.request_bytes)  # both doors' requests, while answered
        self._observe, self._observe_runtime = observe, observe_runtime
        self.parsing = json_bodies.JsonParsing()

    @contextmanager
    def observed(self, name: str, door: str, api: str) -> Iterator[None]:
        """Time a request and report it with its status code: the doors call this, as TF Serving's do
        (gRPC for Predict, Classify and Regress; REST for every `/v1/` request)."""
        started = time.perf_counter()
        code = "OK"
        try:
            yield
        except ServingError as err:
            code = err.code.name
            raise
        except TimeoutError:  # the client's body did not come in time (answered 408)
            code = "DEADLINE_EXCEEDED"
            raise
        except (asyncio.CancelledError, ConnectionError):  # the client went away: nobody was answered
            code = "CANCELLED"
            raise
        except Exception:
            code = "INTERNAL"
            raise
        finally:
            self._observe(name, door, api, code, time.perf_counter() - started)

    async def _run(self, servable: Servable, run: runs.Run, method: str) -> dict[str, np.ndarray]:
        """The model call itself, timed as TF Serving's runtime latency (when it succeeds, under the API's
        gRPC name whichever door it came through)."""
        started = time.perf_counter()
        answer = await servable.predict(run.signature_name, run.inputs, run.outputs)
        self._observe_runtime(
            servable.name, method.capitalize(), servable.runtime, time.perf_counter() - started
        )
        return answer

    async def predict_proto(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        spec = request.model_spec
        version, label = version_of(spec)
        with self.store.serving(spec.name, version, label) as servable:
            run = runs.predict_run(servable, request, self.limits)
            outputs = await self._run(servable, run, "predict")
            response = predict_pb2.PredictResponse(model_spec=runs.answer_spec(spec, servable.version))
            for key, array in outputs.items():
                response.outputs[key].CopyFrom(tensors.to_tensor(array, self.packed_outputs))
            return response

    async def predict_json(
        self, name: str, version: int | None, label: str | None, body: bytes
    ) -> dict[str, Any]:
        with contextlib.ExitStack() as held:
            servable: Servable | None = None
            try:
                servable = held.enter_context(self.store.serving(name, version, label))
            except ServingError as unserved:  # said once the body has been read, as TF Serving does
                await self.parsing.run(json_bodies.predict_inputs, body, None)
                raise unserved
            parsed = await self.parsing.run(json_bodies.predict_inputs, body, servable.input_dtypes)
            assert parsed.arrays is not None
            outputs = await self._run(servable, runs.Run(parsed.signature_name, parsed.arrays), "predict")
        return rest_json.predict_response(outputs, parsed.row_format)

    async def _run_examples(
        self,
        spec: model_pb2.ModelSpec,
        request_input: input_pb2.Input,
        method: str,
    ) -> tuple[model_pb2.ModelSpec, int, dict[str, np.ndarray]]:
        """Classify or Regress. Returns the answer's model spec, the number of examples, the outputs."""
        version, label = version_of(spec)
        with self.store.serving(spec.name, version, label) as servable:
            run = runs.examples_run(servable, spec.signature_name, request_input, method == "classify")
            outputs = await self._run(servable, run, method)
            return runs.answer_spec(spec, servable.version), runs.examples_in(run), outputs

    async def classify_proto(
        self, request: classification_pb2.ClassificationRequest
    ) -> classification_pb2.ClassificationResponse:
        spec, batch, outputs = await self._run_examples(request.model_spec, request.input, "classify")
        return classification_pb2.ClassificationResponse(
            model_spec=spec, result=classify.classification_result(outputs, batch)
        )

    async def regress_proto(
        self, request: regression_pb2.RegressionRequest
    ) -> regression_pb2.RegressionResponse:
        spec, batch, outputs = await self._run_examples(request.model_spec, request.input, "regress")
        return regression_pb2.RegressionResponse(
            model_spec=spec, result=classify.regression_result(outputs["outputs"], batch)
        )

    async def multi_inference_proto(
        self, request: inference_pb2.MultiInferenceRequest
    ) -> inference_pb2.MultiInferenceResponse:
        """MultiInference (multi_inference_helper.cc:28-57): the model comes from the first task's spec,
        every task is checked before any runs (runs.multi_inference_tasks). Neither server counts it in
        the request metrics."""
        first = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
        version, label = version_of(first)
        with self.store.serving(first.name, version, label) as servable:
            response = inference_pb2.MultiInferenceResponse()
            for task in runs.multi_inference_tasks(servable, request):
                outputs = await servable.predict(task.run.signature_name, task.run.inputs, task.run.outputs)
                response.results.append(runs.task_result(task, outputs, servable.version))
        return response

    async def examples_json(
        self, method: str, name: str, version: int | None, label: str | None, body: bytes
    ) -> dict[str, Any]:
        """REST :classify and :regress."""
        signature_name, request_input = await self.parsing.run(classify_json.request_from_json, body, method)
        spec = model_pb2.ModelSpec(name=name, signature_name=signature_name)
        if version is not None:
            spec.version.value = version
        elif label is not None:
            spec.version_label = label
        if method == "classify":
            classification = classification_pb2.ClassificationRequest(model_spec=spec, input=request_input)
            return classify_json.classification_json((await self.classify_proto(classification)).result)
        regression = regression_pb2.RegressionRequest(model_spec=spec, input=request_input)
        return classify_json.regression_json((await self.regress_proto(regression)).result)

    def metadata(
        self, name: str, version: int | None, label: str | None, fields: Iterable[str] = ("signature_def",)
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        fields = list(fields)
        if not fields:
            raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
        for field in fields:
            if field != "signature_def":
                raise invalid_argument(f"Metadata field {field} is not supported")
        with self.store.serving(name, version, label) as servable:
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            for key, signature in servable.signature_defs.items():
                signature_map.signature_def[key].CopyFrom(signature)
            response = get_model_metadata_pb2.GetModelMetadataResponse(
                model_spec=model_pb2.ModelSpec(
                    name=name, version=wrappers_pb2.Int64Value(value=servable.version)
                )
            )
            response.metadata["signature_def"].Pack(signature_map)
            return response

    def metadata_json(self, name: str, version: int | None, label: str | None) -> dict[str, Any]:
        """TF Serving's REST metadata: the packed SignatureDefMap printed unpacked."""
        response = self.metadata(name, version, label)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return {
            "model_spec": proto_json(response.model_spec),
            "metadata": {"signature_def": proto_json(signature_map)},
        }

    def status(self, name: str, version: int | None) -> get_model_status_pb2.GetModelStatusResponse:
        """Every version seen (labels play no part here, as in TF Serving)."""
        response = get_model_status_pb2.GetModelStatusResponse()
        for record in self.store.statuses(name, version):
            response.model_version_status.add(
                version=record.version,
                state=get_model_status_pb2.ModelVersionStatus.State.Value(record.state),
                status=status_pb2.StatusProto(
                    error_code=record.error_code.value[0], error_message=record.error_message
                ),
            )
        return response

    def status_json(self, name: str, version: int | None) -> dict[str, Any]:
        return proto_json(self.status(name, version))
