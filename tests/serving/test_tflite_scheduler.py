"""serving/tflite_scheduler.py in process: TF Serving's batch scheduler inside a TFLite session
(--num_tflite_interpreters_per_pool > 1), over a fake interpreter run that records each execution."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from serving.errors import ServingError
from serving.tflite_scheduler import TfliteScheduler
from tests.conftest import wait_for

pytestmark = pytest.mark.fast


class FakeRun:
    """Doubles its input; records each execution's rows; the first execution waits for `release`."""

    def __init__(self) -> None:
        self.executions: list[tuple[str, int]] = []
        self.release = threading.Event()
        self.started = threading.Event()

    def __call__(self, key: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.started.set()
        assert self.release.wait(10), "the test never released the first execution"
        self.executions.append((key, len(inputs["x"])))
        return {"y": inputs["x"] * 2, "total": inputs["x"].sum(axis=1)}


def rows(count: int, start: float = 0.0, width: int = 3) -> dict[str, np.ndarray]:
    return {"x": np.arange(start, start + count * width, dtype=np.float32).reshape(count, width)}


def test_calls_queued_behind_a_busy_interpreter_run_as_one_and_each_gets_its_rows() -> None:
    run = FakeRun()
    scheduler = TfliteScheduler(run, threads=1, interpreters_per_pool=2)  # executions of up to 250 rows
    assert scheduler.max_rows == 250
    with ThreadPoolExecutor(8) as callers:
        first = callers.submit(scheduler, "a", rows(1))
        assert run.started.wait(10)
        waiting = [callers.submit(scheduler, "a", rows(2, start=100 * i)) for i in range(5)]
        other = callers.submit(scheduler, "b", rows(1))  # another signature: never merged with "a"
        wait_for(lambda: len(scheduler._queue) == 6, 10, "the calls to queue")
        run.release.set()
        np.testing.assert_array_equal(first.result()["y"], rows(1)["x"] * 2)
        for i, future in enumerate(waiting):
            answer = future.result()
            np.testing.assert_array_equal(answer["y"], rows(2, start=100 * i)["x"] * 2)
            np.testing.assert_array_equal(answer["total"], rows(2, start=100 * i)["x"].sum(axis=1))
        assert other.result()["y"].shape == (1, 3)
    assert run.executions[0] == ("a", 1) and sorted(run.executions[1:]) == [("a", 10), ("b", 1)]
    scheduler.close()


def test_a_large_call_runs_in_parts_and_one_past_500_rows_is_refused() -> None:
    run = FakeRun()
    run.release.set()
    scheduler = TfliteScheduler(run, threads=2, interpreters_per_pool=4)  # parts of up to 125 rows
    answer = scheduler("a", rows(300))
    np.testing.assert_array_equal(answer["y"], rows(300)["x"] * 2)
    assert sorted(n for _, n in run.executions) == [50, 125, 125]
    with pytest.raises(ServingError) as refused:
        scheduler("a", rows(501))
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Task size 501 is larger than maximum input batch size 500" in refused.value.message
    scheduler.close()


def test_a_failed_execution_fails_every_call_in_it_and_the_threads_go_on() -> None:
    def broken(key: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if len(inputs["x"]) == 4:
            raise ValueError("the interpreter could not resize")
        return {"y": inputs["x"]}

    scheduler = TfliteScheduler(broken, threads=1, interpreters_per_pool=2)
    with pytest.raises(ValueError, match="could not resize"):
        scheduler("a", rows(4))
    assert scheduler("a", rows(2))["y"].shape == (2, 3)
    scheduler.close()
    with pytest.raises(ServingError, match="unloading"):
        scheduler("a", rows(1))


def test_a_model_with_a_fixed_batch_runs_in_batches_of_it_and_a_scalar_output_is_internal() -> None:
    run = FakeRun()
    run.release.set()
    scheduler = TfliteScheduler(run, threads=1, interpreters_per_pool=2, model_batch_size=8)
    assert scheduler.max_rows == 8  # GetModelBatchSize wins over ceil(500 / 2)
    scheduler("a", rows(20))
    assert [n for _, n in run.executions] == [8, 8, 4]
    scheduler.close()

    scalar = TfliteScheduler(lambda key, inputs: {"y": np.array(1.0)}, threads=1, interpreters_per_pool=2)
    with pytest.raises(ServingError) as failed:
        scalar("a", rows(2))
    assert (
        failed.value.code == grpc.StatusCode.INTERNAL
        and "Tensor split operation failed" in failed.value.message
    )
    scalar.close()
