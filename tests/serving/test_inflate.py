"""serving/inflate.py in process: compressed gRPC messages, told apart from plain ones and inflated
within the byte budget."""

from __future__ import annotations

import gzip
import zlib

import grpc
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from serving.errors import ServingError
from serving.inflate import CHUNK, GZIP, ZLIB, compression_of, inflated
from serving.limits import ByteBudget
from tests.conftest import run_coroutine
from tfs_api.tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_management_pb2,
    predict_pb2,
    regression_pb2,
)

pytestmark = pytest.mark.fast


def requests_the_services_take() -> list[Message]:
    """One of each request type, with every top-level field set."""
    predict = predict_pb2.PredictRequest(output_filter=["probabilities"])
    predict.model_spec.name = "mnist"
    predict.inputs["images"].float_val.extend([0.5] * 784)
    examples = input_pb2.Input()
    examples.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
    classify = classification_pb2.ClassificationRequest(model_spec=predict.model_spec, input=examples)
    regress = regression_pb2.RegressionRequest(model_spec=predict.model_spec, input=examples)
    multi = inference_pb2.MultiInferenceRequest(input=examples)
    multi.tasks.add().model_spec.name = "mnist"
    metadata = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=predict.model_spec, metadata_field=["signature_def"]
    )
    status = get_model_status_pb2.GetModelStatusRequest(model_spec=predict.model_spec)
    reload = model_management_pb2.ReloadConfigRequest()
    reload.config.model_config_list.config.add(name="mnist", base_path="/models/mnist")
    reload.metric_names.append("x")
    return [
        predict,
        classify,
        regress,
        multi,
        metadata,
        status,
        reload,
        health_pb2.HealthCheckRequest(service="x"),
    ]


def test_gzip_and_zlib_are_told_from_any_request_the_services_take() -> None:
    for request in requests_the_services_take():
        plain = request.SerializeToString()
        assert compression_of(plain) is None, type(request).__name__
        assert compression_of(gzip.compress(plain)) == GZIP
        assert compression_of(zlib.compress(plain)) == ZLIB
        assert compression_of(zlib.compress(plain, 1)) == ZLIB
    assert compression_of(b"") is None and compression_of(b"\x78") is None


def test_a_message_inflates_whole_and_holds_its_size_of_the_budget() -> None:
    data = bytes(range(256)) * (3 * CHUNK // 256 + 7)  # several chunks, not a whole number of them
    budget = ByteBudget(10 * CHUNK)
    for compressed, wbits in ((gzip.compress(data), GZIP), (zlib.compress(data), ZLIB)):
        whole = run_coroutine(inflated(compressed, wbits, budget))
        assert whole == data and len(data) == budget.total - budget.free
        budget.give_back(len(whole))


def test_a_bomb_is_refused_once_it_passes_the_budget_and_holds_nothing() -> None:
    bomb = gzip.compress(bytes(100 * CHUNK))  # 100 MB of zeros in about 100 KB
    assert len(bomb) < CHUNK // 4
    budget = ByteBudget(8 * CHUNK)
    with pytest.raises(ServingError) as too_far:
        run_coroutine(inflated(bomb, GZIP, budget))
    assert too_far.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert budget.free == budget.total
    budget.take(7 * CHUNK)  # while others hold most of it, a smaller one is told to come back
    with pytest.raises(ServingError) as busy:
        run_coroutine(inflated(gzip.compress(bytes(2 * CHUNK)), GZIP, budget))
    assert busy.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and budget.free == CHUNK


def test_data_that_only_looks_compressed_is_a_zlib_error_and_holds_nothing() -> None:
    budget = ByteBudget(CHUNK)
    whole = gzip.compress(b"x" * 1000)
    for data, wbits in (
        (whole[:-9], GZIP),  # cut short
        (whole + b"junk", GZIP),  # bytes after the end, which gRPC's core refuses too
        (whole + whole, GZIP),  # two streams
        (b"\x78\x9c" + b"\x01" * 40, ZLIB),  # a zlib header and no zlib data
    ):
        with pytest.raises(zlib.error):
            run_coroutine(inflated(data, wbits, budget))
        assert budget.free == budget.total


def test_a_call_cancelled_while_its_chunk_waits_for_the_inflater_holds_nothing() -> None:
    """The job waiting in INFLATER's queue is cancelled with the call, and its bytes given back."""
    import asyncio
    import threading

    from serving.inflate import INFLATER

    budget = ByteBudget(10 * CHUNK)
    busy = threading.Event()
    blocker = INFLATER.submit(busy.wait, 10)  # the inflater is busy: the call's next chunk must queue

    async def cancelled() -> int:
        call = asyncio.ensure_future(inflated(gzip.compress(bytes(4 * CHUNK)), GZIP, budget))
        while budget.free == budget.total:  # its first chunk, inflated on the loop, is held
            await asyncio.sleep(0)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        return budget.free

    try:
        assert run_coroutine(cancelled()) == budget.total
    finally:
        busy.set()
        blocker.result(10)
