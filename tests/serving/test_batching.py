"""serving/batching.py in process: TF Serving's BatchingParameters semantics against a fake model.

The queue lives on an event loop and runs merged calls on a ModelPool's threads. The fake model doubles
its input and records the batch size of every call, so each test can say which requests were merged
into which call. Merges are made deterministic without sleeping: a batch whose timeout is long runs
only once it is full, so "one call of size N" can only happen if N rows were merged.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest
from google.protobuf import text_format

from serving.batching import Arrays, Batcher, BatchPolicy, BatchQueue, leave_a_core_to_the_loop
from serving.errors import ServingError
from serving.model_pool import ModelPool
from tests.conftest import run_coroutine
from tfs_api.batching_pb2 import BatchingParameters

pytestmark = pytest.mark.fast

Result = TypeVar("Result")
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
def pool() -> Iterator[ModelPool]:
    made = ModelPool(threads=4, max_waiting=100)
    yield made
    made.shutdown()


@pytest.fixture
def make_queue(pool: ModelPool) -> Iterator[MakeQueue]:
    """A BatchQueue over a fresh FakeModel with the given policy; held models are let go afterwards."""
    models: list[FakeModel] = []

    def make(**policy: Any) -> tuple[BatchQueue, FakeModel]:
        model = FakeModel()
        models.append(model)
        return BatchQueue(model, BatchPolicy(**policy), pool, lambda _: None), model

    yield make
    for model in models:
        model.proceed.set()


def run(scenario: Coroutine[Any, Any, Result]) -> Result:
    """One test's requests, on an event loop of their own, within a deadline."""
    return run_coroutine(scenario, LONG_S / 2)


async def gather(queue: BatchQueue, requests: list[Arrays]) -> list[Arrays | BaseException]:
    """Submit every request at once (in order) and wait for all of them."""
    return await asyncio.gather(*(queue.submit(r) for r in requests), return_exceptions=True)


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` from the loop (the model runs on a pool thread) up to a deadline."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_concurrent_requests_are_merged_into_one_call_and_split_back_in_order(make_queue: MakeQueue) -> None:
    """Three callers of 1, 3 and 2 examples fill a batch of 6: one model call, and each caller gets
    exactly its own rows back, in its own order (an off-by-one in the split would hand rows across)."""
    queue, model = make_queue(max_batch_size=6, batch_timeout_s=LONG_S, num_batch_threads=1)
    requests = [rows(0, 1), rows(100, 3), rows(200, 2)]
    started = time.monotonic()
    results = run(gather(queue, requests))

    assert time.monotonic() - started < 10, "a full batch must run at once, not after its timeout"
    assert model.sizes == [6]
    for request, result in zip(requests, results, strict=True):
        assert not isinstance(result, BaseException)
        np.testing.assert_array_equal(result["y"], request["x"] * 2)
    merged = model.inputs[0]
    assert sorted(map(tuple, merged.tolist())) == sorted(
        tuple(row) for r in requests for row in r["x"].tolist()
    )


def test_a_batch_is_padded_to_the_first_allowed_size_that_holds_it(pool: ModelPool) -> None:
    """As TF Serving's batching session (batching_session.cc:495-562): 1 + 2 examples run as a batch of
    4, the padding a copy of the last request's first example, the metric counting 4; each caller gets
    its own rows only."""
    model, heard = FakeModel(), list[int]()
    policy = BatchPolicy(
        max_batch_size=8, batch_timeout_s=0.2, num_batch_threads=1, allowed_batch_sizes=(2, 4, 8)
    )
    queue = BatchQueue(model, policy, pool, heard.append)
    requests = [rows(0, 1), rows(100, 2)]
    results = run(gather(queue, requests))
    assert model.sizes == [4] and heard == [4]
    np.testing.assert_array_equal(model.inputs[0][3], requests[1]["x"][0])
    for request, result in zip(requests, results, strict=True):
        assert not isinstance(result, BaseException)
        np.testing.assert_array_equal(result["y"], request["x"] * 2)


def test_a_request_of_no_examples_is_padded_from_one_that_has_some(pool: ModelPool) -> None:
    """A zero-row request last in a batch gives no row to pad with: the one before it does; a batch of
    nothing but empty requests runs as it is."""
    model, heard = FakeModel(), list[int]()
    policy = BatchPolicy(
        max_batch_size=8, batch_timeout_s=0.2, num_batch_threads=1, allowed_batch_sizes=(4, 8)
    )
    queue = BatchQueue(model, policy, pool, heard.append)
    requests = [rows(0, 1), rows(100, 0)]
    results = run(gather(queue, requests))
    assert model.sizes == [4] and heard == [4]
    np.testing.assert_array_equal(model.inputs[0][1:], np.repeat(requests[0]["x"], 3, axis=0))
    for request, result in zip(requests, results, strict=True):
        assert not isinstance(result, BaseException)
        np.testing.assert_array_equal(result["y"], request["x"] * 2)
    alone = run(gather(queue, [rows(0, 0)]))
    assert model.sizes[-1] == 0 and not isinstance(alone[0], BaseException) and len(alone[0]["y"]) == 0


def test_a_batch_never_holds_more_than_max_batch_size(make_queue: MakeQueue) -> None:
    """Two requests of 3 cannot share a batch of at most 4: each runs alone, neither is split."""
    queue, model = make_queue(max_batch_size=4, batch_timeout_s=0.05, num_batch_threads=1)
    requests = [rows(0, 3), rows(100, 3)]
    results = run(gather(queue, requests))

    assert model.sizes == [3, 3]
    for request, result in zip(requests, results, strict=True):
        assert not isinstance(result, BaseException)
        np.testing.assert_array_equal(result["y"], request["x"] * 2)


def test_a_batch_takes_whole_requests_up_to_the_limit(make_queue: MakeQueue) -> None:
    """Four requests of 2 under a limit of 4: two full batches of two requests each, never one call
    with everything that is waiting."""
    queue, model = make_queue(max_batch_size=4, batch_timeout_s=LONG_S, num_batch_threads=1)
    requests = [rows(0, 2), rows(100, 2), rows(200, 2), rows(300, 2)]
    results = run(gather(queue, requests))

    assert model.sizes == [4, 4]
    for request, result in zip(requests, results, strict=True):
        assert not isinstance(result, BaseException)
        np.testing.assert_array_equal(result["y"], request["x"] * 2)


def test_requests_that_arrive_while_every_slot_is_busy_make_the_next_batch(make_queue: MakeQueue) -> None:
    """With no timeout, a lone request runs at once; those arriving while it runs (the only slot busy)
    wait and then go together: under load the batches grow by themselves."""
    queue, model = make_queue(max_batch_size=100, batch_timeout_s=0.0, num_batch_threads=1)

    async def scenario() -> list[Arrays | BaseException]:
        model.proceed.clear()
        first = asyncio.ensure_future(queue.submit(rows(0, 1)))
        await until(model.entered.is_set, "the first request to reach the model")
        later = asyncio.gather(*(queue.submit(rows(10 * i, 1)) for i in range(1, 6)), return_exceptions=True)
        await asyncio.sleep(0)  # the five are queued behind the busy slot
        model.proceed.set()
        return [await first, *(await later)]

    results = run(scenario())
    assert model.sizes == [1, 5]
    assert all(not isinstance(r, BaseException) for r in results)


def test_a_lone_request_waits_batch_timeout_for_company(make_queue: MakeQueue) -> None:
    """batch_timeout_micros: a batch that is not full runs once its oldest request has waited that long."""
    queue, model = make_queue(max_batch_size=100, batch_timeout_s=0.2, num_batch_threads=1)
    started = time.monotonic()
    result = run(queue.submit(rows(7, 1)))

    assert time.monotonic() - started >= 0.2
    assert model.sizes == [1]
    np.testing.assert_array_equal(result["y"], rows(7, 1)["x"] * 2)


def test_an_oversized_request_is_refused_and_one_of_exactly_max_is_run(make_queue: MakeQueue) -> None:
    """As TF Serving without large-batch splitting: a task larger than max_batch_size is INVALID_ARGUMENT
    and never reaches the model; a task of exactly max_batch_size is a full batch."""
    queue, model = make_queue(max_batch_size=4, batch_timeout_s=LONG_S, num_batch_threads=1)
    with pytest.raises(ServingError) as refused:
        run(queue.submit(rows(0, 5)))
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.message == "Task size 5 is larger than maximum input batch size 4"
    assert model.sizes == []

    np.testing.assert_array_equal(run(queue.submit(rows(0, 4)))["y"], rows(0, 4)["x"] * 2)
    assert model.sizes == [4]


def test_a_failing_call_fails_every_caller_of_its_batch_and_the_queue_lives_on(
    make_queue: MakeQueue,
) -> None:
    """The model's exception reaches each request of the batch (none is left waiting), and the queue
    goes on to run the next batch."""
    queue, model = make_queue(max_batch_size=3, batch_timeout_s=LONG_S, num_batch_threads=1)
    model.error = ValueError("the model broke")
    errors = run(gather(queue, [rows(0, 1), rows(100, 1), rows(200, 1)]))

    assert model.sizes == [3]
    assert all(isinstance(e, ValueError) and str(e) == "the model broke" for e in errors), errors

    model.error = None
    np.testing.assert_array_equal(run(queue.submit(rows(5, 3)))["y"], rows(5, 3)["x"] * 2)
    assert model.sizes == [3, 3]


def test_a_caller_that_gives_up_leaves_the_rest_of_its_batch_answered(make_queue: MakeQueue) -> None:
    """A cancelled request (a client gone mid-call) is dropped from the answers; the batch's other
    callers get theirs, and the queue runs the next batch."""
    queue, model = make_queue(max_batch_size=2, batch_timeout_s=LONG_S, num_batch_threads=1)

    async def scenario() -> Arrays:
        model.proceed.clear()
        gone = asyncio.ensure_future(queue.submit(rows(0, 1)))
        stays = asyncio.ensure_future(queue.submit(rows(100, 1)))
        await until(model.entered.is_set, "the batch to reach the model")
        gone.cancel()
        model.proceed.set()
        return await stays

    np.testing.assert_array_equal(run(scenario())["y"], rows(100, 1)["x"] * 2)
    np.testing.assert_array_equal(run(queue.submit(rows(5, 2)))["y"], rows(5, 2)["x"] * 2)
    assert model.sizes == [2, 2]


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
    errors = run(gather(queue, [rows(0, 1), rows(100, 1)]))

    for error in errors:
        assert isinstance(error, ServingError)
        assert error.code == grpc.StatusCode.INTERNAL
        assert error.message == "an output's batch size differs from the input's"


def test_a_full_queue_refuses_with_unavailable(make_queue: MakeQueue) -> None:
    """max_enqueued_batches x max_batch_size examples may wait; past that a request is UNAVAILABLE at
    once. With the only slot busy, requests of 2 and then 1 cannot both wait in room for 2: the second
    is refused, the first is run when the slot is free."""
    queue, model = make_queue(
        max_batch_size=2, batch_timeout_s=0.05, max_enqueued_batches=1, num_batch_threads=1
    )

    async def scenario() -> tuple[Arrays, Arrays, BaseException | None]:
        model.proceed.clear()
        running = asyncio.ensure_future(queue.submit(rows(0, 2)))
        await until(model.entered.is_set, "the first batch to reach the model")
        waits = asyncio.ensure_future(queue.submit(rows(100, 2)))
        refused = asyncio.ensure_future(queue.submit(rows(200, 1)))
        await until(refused.done, "the second request to be refused")
        assert not waits.done()
        model.proceed.set()
        return await running, await waits, refused.exception()

    running, waited, error = run(scenario())
    assert isinstance(error, ServingError)
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.message == "The batch scheduling queue to which this task was submitted is full"
    np.testing.assert_array_equal(running["y"], rows(0, 2)["x"] * 2)
    np.testing.assert_array_equal(waited["y"], rows(100, 2)["x"] * 2)
    assert model.sizes == [2, 2]


def test_a_closed_queue_refuses_new_requests(make_queue: MakeQueue) -> None:
    queue, model = make_queue(max_batch_size=2, batch_timeout_s=0.0, num_batch_threads=1)
    queue.close()
    with pytest.raises(ServingError) as refused:
        run(queue.submit(rows(0, 1)))
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    assert model.sizes == []


def test_batcher_merges_only_requests_of_the_same_signature_and_example_shape(pool: ModelPool) -> None:
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

    batcher = Batcher(policy, "m-1", pool, heard.append)
    requests = [
        (key, rows(100 * start + 10 * count, count, width))
        for start, (key, width) in enumerate([("a", 2), ("a", 3), ("b", 2)])
        for count in (1, 2)
    ]

    async def scenario() -> list[Arrays]:
        return await asyncio.gather(*(batcher.run((key,), r, call_for(key)) for key, r in requests))

    results = run(scenario())
    batcher.close()
    for (_, request), result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["y"], request["x"] * 2)
    assert sorted(calls) == [("a", (2,), 3), ("a", (3,), 3), ("b", (2,), 3)]
    assert heard == [3, 3, 3]


def test_an_unloaded_batcher_refuses_with_unavailable(pool: ModelPool) -> None:
    batcher = Batcher(BatchPolicy(num_batch_threads=1), "m-1", pool)
    batcher.close()
    with pytest.raises(ServingError) as refused:
        run(batcher.run(("k",), rows(0, 1), lambda inputs: inputs))
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


def test_policy_takes_allowed_batch_sizes_whose_last_is_the_largest_batch() -> None:
    params = text_format.Parse(
        "max_batch_size { value: 64 } allowed_batch_sizes: [8, 16, 64]", BatchingParameters()
    )
    policy = BatchPolicy.from_proto(params, cores=2)
    assert policy.allowed_batch_sizes == (8, 16, 64)
    assert [policy.padded_size(n) for n in (1, 8, 9, 17, 64)] == [8, 8, 16, 64, 64]
    assert BatchPolicy(64).padded_size(5) == 5


SPLITTING = "max_batch_size { value: 8 } enable_large_batch_splitting { value: true }"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "max_batch_size { value: 4 } allowed_batch_sizes: [2, 3]",
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 3; expected 4",
        ),
        (
            "allowed_batch_sizes: [8]",
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 8; expected 1000",
        ),
        ("batch_timeout_micros { value: -5 }", "batch_timeout_micros must be non-negative; was -5"),
        (
            f"{SPLITTING} allowed_batch_sizes: [4, 2, 8]",
            "allowed_batch_sizes entries must be monotonically increasing",
        ),
        (
            f"{SPLITTING} allowed_batch_sizes: [4, 16]",
            "Last entry in allowed_batch_sizes must be less than or equal to max_batch_size; "
            "last entry was 16; expected 8",
        ),
        (
            f"{SPLITTING} max_execution_batch_size {{ value: 8 }} allowed_batch_sizes: [2, 4]",
            "Last entry in allowed_batch_sizes must be equal to max_execution_batch_size; "
            "last entry was 4; expected 8",
        ),
    ],
    ids=[
        "last-not-max",
        "default-max",
        "negative-timeout",
        "splitting-not-increasing",
        "splitting-over-max",
        "splitting-not-execution",
    ],
)
def test_policy_refuses_what_would_fail_every_load_in_tf_serving(text: str, message: str) -> None:
    """bundle_factory_util.cc:113-125, batching_session.cc:1012-1038, TensorFlow's AddQueue: TF
    Serving starts, and then no model loads; ours refuses the file at start."""
    with pytest.raises(ValueError) as refused:
        BatchPolicy.from_proto(text_format.Parse(text, BatchingParameters()), cores=2)
    assert str(refused.value) == message


@pytest.mark.parametrize(
    ("threads", "cores", "at_once"), [(2, 2, 1), (2, 1, 1), (4, 3, 2), (2, 8, 2), (1, 8, 1)]
)
def test_the_server_leaves_one_core_to_its_loop(threads: int, cores: int, at_once: int) -> None:
    """At most cores - 1 batches run at once, one at least; everything else in the policy stays."""
    policy = BatchPolicy(64, 0.002, 100, threads)
    assert leave_a_core_to_the_loop(policy, cores) == BatchPolicy(64, 0.002, 100, at_once)


@pytest.mark.parametrize("field", ["max_batch_size", "max_enqueued_batches", "num_batch_threads"])
def test_policy_refuses_a_parameter_below_one(field: str) -> None:
    params = text_format.Parse(f"{field} {{ value: 0 }}", BatchingParameters())
    with pytest.raises(ValueError, match=f"batching parameter {field} must be at least 1, got 0"):
        BatchPolicy.from_proto(params, cores=4)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"x": np.float32(3.0)}, "input tensors must have at least one dimension"),
        ({"x": np.zeros((2, 3)), "z": np.zeros((3, 3))}, "input tensors must have equal 0th-dimension size"),
    ],
)
def test_inputs_without_a_shared_batch_dimension_are_invalid_arguments(
    pool: ModelPool, inputs: Arrays, message: str
) -> None:
    """A scalar, or inputs whose first dimensions differ, cannot be batched: INVALID_ARGUMENT, as TF
    Serving's batching session answers (before: a TypeError, answered as INTERNAL)."""
    batcher = Batcher(BatchPolicy(), "m-1", pool)
    with pytest.raises(ServingError) as refused:
        run(batcher.run(("k",), inputs, lambda arrays: arrays))
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in refused.value.message


def test_closing_a_batcher_from_another_thread_wakes_what_waits(pool: ModelPool) -> None:
    """An unload runs on the store's thread, not the queues' loop: the requests still waiting in a
    queue are refused on that loop, promptly, instead of waiting out the batch timeout."""
    batcher = Batcher(BatchPolicy(max_batch_size=8, batch_timeout_s=LONG_S), "m-1", pool)

    async def scenario() -> ServingError:
        waiting = asyncio.ensure_future(batcher.run(("k",), rows(0, 1), lambda arrays: arrays))
        await asyncio.sleep(0)  # queued, waiting for a batch that will not fill
        await asyncio.to_thread(batcher.close)
        try:
            await asyncio.wait_for(waiting, 5)
        except ServingError as err:
            return err
        raise AssertionError("a request in a closed queue was answered")

    error = run(scenario())
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.message == "the model was unloaded"
