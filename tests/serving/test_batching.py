"""serving/batching.py in process: TF Serving's BatchingParameters semantics against a fake model.

The fake model doubles its input and records the batch size of every call, so each test can say which
requests were merged into which call. Merges are made deterministic without sleeping: a batch whose
timeout is long runs only once it is full, so "one call of size N" can only happen if N rows were merged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from google.protobuf import text_format

from serving.batching import Arrays, Batcher, BatchPolicy, BatchQueue
from serving.errors import ServingError
from serving.protos import BatchingParameters
from tests.conftest import wait_for

pytestmark = pytest.mark.fast

LONG_S = 30.0  # a batch timeout no passing test waits for: the batch must fill up instead


class FakeModel:
    """Doubles `x`; records each call's batch size; can be held mid-call or made to fail or misbehave."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.inputs: list[np.ndarray] = []
        self.entered = threading.Event()
        self.proceed = threading.Event()
        self.proceed.set()
        self.error: Exception | None = None
        self.bad_output: Callable[[np.ndarray], Arrays] | None = None
        self._lock = threading.Lock()

    def __call__(self, inputs: Arrays) -> Arrays:
        with self._lock:
            self.sizes.append(len(inputs["x"]))
            self.inputs.append(inputs["x"].copy())
        self.entered.set()
        assert self.proceed.wait(LONG_S), "the test never let the held call finish"
        if self.error is not None:
            raise self.error
        if self.bad_output is not None:
            return self.bad_output(inputs["x"])
        return {"y": inputs["x"] * 2}


def rows(first: float, count: int, width: int = 2) -> Arrays:
    """`count` distinct examples starting at `first`, so every caller's rows can be told apart."""
    return {"x": (first + np.arange(count * width, dtype=np.float32)).reshape(count, width)}


MakeQueue = Callable[..., tuple[BatchQueue, FakeModel]]


@pytest.fixture
def make_queue() -> Iterator[MakeQueue]:
    """A BatchQueue over a fresh FakeModel with the given policy; every queue is closed afterwards."""
    made: list[tuple[BatchQueue, FakeModel]] = []

    def make(**policy: float) -> tuple[BatchQueue, FakeModel]:
        model = FakeModel()
        # A fake stands in for the Servable: only its call signature matters to the queue.
        queue = BatchQueue(model, BatchPolicy(**policy), "test", lambda _: None)  # type: ignore[arg-type]
        made.append((queue, model))
        return queue, model

    yield make
    for queue, model in made:
        model.proceed.set()
        queue.close()


def submit_all(queue: BatchQueue, requests: list[Arrays]) -> list[Future[Arrays]]:
    pool = ThreadPoolExecutor(len(requests))
    futures = [pool.submit(queue.submit, request) for request in requests]
    pool.shutdown(wait=False)
    return futures


def test_concurrent_requests_are_merged_into_one_call_and_split_back_in_order(make_queue: MakeQueue) -> None:
    """Three callers of 1, 3 and 2 examples fill a batch of 6: one model call, and each caller gets
    exactly its own rows back, in its own order (an off-by-one in the split would hand rows across)."""
    queue, model = make_queue(max_batch_size=6, batch_timeout_s=LONG_S, num_batch_threads=1)
    requests = [rows(0, 1), rows(100, 3), rows(200, 2)]
    started = time.monotonic()
    futures = submit_all(queue, requests)
    results = [f.result(timeout=10) for f in futures]

    assert time.monotonic() - started < 10, "a full batch must run at once, not after its timeout"
    assert model.sizes == [6]
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["y"], request["x"] * 2)
    merged = model.inputs[0]
    assert sorted(map(tuple, merged.tolist())) == sorted(
        tuple(row) for r in requests for row in r["x"].tolist()
    )


def test_a_batch_never_holds_more_than_max_batch_size(make_queue: MakeQueue) -> None:
    """Two requests of 3 cannot share a batch of at most 4: each runs alone, neither is split."""
    queue, model = make_queue(max_batch_size=4, batch_timeout_s=0.05, num_batch_threads=1)
    requests = [rows(0, 3), rows(100, 3)]
    results = [f.result(timeout=10) for f in submit_all(queue, requests)]

    assert model.sizes == [3, 3]
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["y"], request["x"] * 2)


def test_a_batch_takes_whole_requests_up_to_the_limit(make_queue: MakeQueue) -> None:
    """Four requests of 2 under a limit of 4: two full batches of two requests each, however the
    requests interleave, never one call with everything that is waiting."""
    queue, model = make_queue(max_batch_size=4, batch_timeout_s=LONG_S, num_batch_threads=1)
    requests = [rows(0, 2), rows(100, 2), rows(200, 2), rows(300, 2)]
    results = [f.result(timeout=10) for f in submit_all(queue, requests)]

    assert model.sizes == [4, 4]
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["y"], request["x"] * 2)


def test_a_lone_request_waits_batch_timeout_for_company(make_queue: MakeQueue) -> None:
    """batch_timeout_micros: a batch that is not full runs once its oldest request has waited that long."""
    queue, model = make_queue(max_batch_size=100, batch_timeout_s=0.2, num_batch_threads=1)
    started = time.monotonic()
    result = queue.submit(rows(7, 1))

    assert time.monotonic() - started >= 0.2
    assert model.sizes == [1]
    np.testing.assert_array_equal(result["y"], rows(7, 1)["x"] * 2)


def test_an_oversized_request_is_refused_and_one_of_exactly_max_is_run(make_queue: MakeQueue) -> None:
    """As TF Serving without large-batch splitting: a task larger than max_batch_size is INVALID_ARGUMENT
    and never reaches the model; a task of exactly max_batch_size is a full batch."""
    queue, model = make_queue(max_batch_size=4, batch_timeout_s=LONG_S, num_batch_threads=1)
    with pytest.raises(ServingError) as refused:
        queue.submit(rows(0, 5))
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.message == "Task size 5 is larger than maximum input batch size 4"
    assert model.sizes == []

    np.testing.assert_array_equal(queue.submit(rows(0, 4))["y"], rows(0, 4)["x"] * 2)
    assert model.sizes == [4]


def test_a_failing_call_fails_every_caller_of_its_batch_and_the_queue_lives_on(
    make_queue: MakeQueue,
) -> None:
    """The model's exception reaches each request of the batch (none is left waiting), and the batch
    thread survives to run the next batch."""
    queue, model = make_queue(max_batch_size=3, batch_timeout_s=LONG_S, num_batch_threads=1)
    model.error = ValueError("the model broke")
    futures = submit_all(queue, [rows(0, 1), rows(100, 1), rows(200, 1)])
    errors = [f.exception(timeout=10) for f in futures]

    assert model.sizes == [3]
    assert all(isinstance(e, ValueError) and str(e) == "the model broke" for e in errors), errors

    model.error = None
    np.testing.assert_array_equal(queue.submit(rows(5, 3))["y"], rows(5, 3)["x"] * 2)
    assert model.sizes == [3, 3]


@pytest.mark.parametrize(
    "bad_output",
    [lambda x: {"y": x[:1]}, lambda x: {"y": np.float32(1.0)}],
    ids=["fewer-rows", "scalar"],
)
def test_an_output_without_the_batch_dimension_is_internal_for_every_caller(
    make_queue: MakeQueue, bad_output: Callable[[np.ndarray], Arrays]
) -> None:
    """An output that cannot be split by rows must fail the batch, not hand callers the wrong rows."""
    queue, model = make_queue(max_batch_size=2, batch_timeout_s=LONG_S, num_batch_threads=1)
    model.bad_output = bad_output
    errors = [f.exception(timeout=10) for f in submit_all(queue, [rows(0, 1), rows(100, 1)])]

    for error in errors:
        assert isinstance(error, ServingError)
        assert error.code == grpc.StatusCode.INTERNAL
        assert error.message == "an output's batch size differs from the input's"


def test_a_full_queue_refuses_with_unavailable(make_queue: MakeQueue) -> None:
    """max_enqueued_batches x max_batch_size examples may wait; past that a request is UNAVAILABLE at
    once. With the only batch thread held, two requests of 2 and 1 cannot both wait in room for 2, so
    exactly one is refused, whichever came second; the other is run when the thread is free."""
    queue, model = make_queue(
        max_batch_size=2, batch_timeout_s=0.05, max_enqueued_batches=1, num_batch_threads=1
    )
    model.proceed.clear()
    running = submit_all(queue, [rows(0, 2)])[0]
    wait_for(model.entered.is_set, 10, "the first batch to reach the model")

    contenders = submit_all(queue, [rows(100, 2)]) + submit_all(queue, [rows(200, 1)])
    wait_for(lambda: any(f.done() for f in contenders), 10, "one request to be refused")
    refused = [f for f in contenders if f.done()]
    assert len(refused) == 1
    error = refused[0].exception()
    assert isinstance(error, ServingError)
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.message == "The batch scheduling queue to which this task was submitted is full"

    model.proceed.set()
    np.testing.assert_array_equal(running.result(timeout=10)["y"], rows(0, 2)["x"] * 2)
    (waited,) = [f for f in contenders if f is not refused[0]]
    assert set(waited.result(timeout=10)) == {"y"}
    assert len(model.sizes) == 2


def test_a_closed_queue_refuses_new_requests(make_queue: MakeQueue) -> None:
    queue, model = make_queue(max_batch_size=2, batch_timeout_s=0.0, num_batch_threads=1)
    queue.close()
    with pytest.raises(ServingError) as refused:
        queue.submit(rows(0, 1))
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    assert model.sizes == []


def test_batcher_merges_only_requests_of_the_same_signature_and_example_shape() -> None:
    """A Batcher keeps a queue per (signature and outputs, example shape): requests that differ in either
    are never concatenated (they could not be), and on_batch hears each model call's size. Each queue
    gets requests of 1 and 2 examples, so each fills its batch of 3 only with its own two requests."""
    policy = BatchPolicy(max_batch_size=3, batch_timeout_s=LONG_S, num_batch_threads=1)
    heard: list[int] = []
    calls: list[tuple[str, tuple[int, ...], int]] = []
    lock = threading.Lock()

    def call_for(key: str) -> Callable[[Arrays], Arrays]:
        def call(inputs: Arrays) -> Arrays:
            with lock:
                calls.append((key, inputs["x"].shape[1:], len(inputs["x"])))
            return {"y": inputs["x"] * 2}

        return call

    batcher = Batcher(policy, "m-1", heard.append)
    requests = [
        (key, rows(100 * start + 10 * count, count, width))
        for start, (key, width) in enumerate([("a", 2), ("a", 3), ("b", 2)])
        for count in (1, 2)
    ]
    try:
        with ThreadPoolExecutor(len(requests)) as pool:
            futures = [pool.submit(batcher.run, (key,), r, call_for(key)) for key, r in requests]
            results = [f.result(timeout=10) for f in futures]
    finally:
        batcher.close()

    for (_, request), result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["y"], request["x"] * 2)
    assert sorted(calls) == [("a", (2,), 3), ("a", (3,), 3), ("b", (2,), 3)]
    assert heard == [3, 3, 3]


def test_an_unloaded_batcher_refuses_with_unavailable() -> None:
    batcher = Batcher(BatchPolicy(num_batch_threads=1), "m-1")
    batcher.close()
    with pytest.raises(ServingError) as refused:
        batcher.run(("k",), rows(0, 1), lambda inputs: inputs)
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    assert refused.value.message == "m-1 has been unloaded"


def test_policy_from_batching_parameters_takes_tf_serving_defaults() -> None:
    """What the file leaves out takes TF Serving's default (threads: one per core); micros become
    seconds."""
    assert BatchPolicy.from_proto(BatchingParameters(), cores=6) == BatchPolicy(1000, 0.0, 10, 6)
    params = text_format.Parse(
        "max_batch_size { value: 32 } batch_timeout_micros { value: 2500 } "
        "max_enqueued_batches { value: 3 } num_batch_threads { value: 2 }",
        BatchingParameters(),
    )
    assert BatchPolicy.from_proto(params, cores=6) == BatchPolicy(32, 0.0025, 3, 2)


@pytest.mark.parametrize("field", ["max_batch_size", "max_enqueued_batches", "num_batch_threads"])
def test_policy_refuses_a_parameter_below_one(field: str) -> None:
    params = text_format.Parse(f"{field} {{ value: 0 }}", BatchingParameters())
    with pytest.raises(ValueError, match=f"batching parameter {field} must be at least 1, got 0"):
        BatchPolicy.from_proto(params, cores=4)
