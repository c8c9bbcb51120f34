"""The batch scheduler TF Serving puts inside a TFLite session when --num_tflite_interpreters_per_pool > 1.

TfLiteSession then queues every call and lets one thread per interpreter take as many queued calls as fit
in one execution of `ceil(500 / per_pool)` rows, run them as one, and hand each call its rows back; a call
of more rows than that is split over several executions, and one of more than 500 rows is refused
(tflite_session.cc:516-533; docs/tf-serving-compat.md). Calls merge only with calls of the same
signature and the same shape past the batch dimension. This is separate from --enable_batching, which
merges requests before they reach the session.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import grpc
import numpy as np

from serving.errors import ServingError, invalid_argument

Arrays = dict[str, np.ndarray]
MAX_BATCH_ROWS = 500  # TF Serving's internal::kInitialBatchSize


@dataclass
class _Call:
    key: str
    inputs: Arrays
    rows: int
    answer: Future[Arrays] = field(default_factory=Future)

    def fits(self, other: _Call) -> bool:
        """Whether the two can run as one: the same signature and inputs shaped alike past dimension 0."""
        return self.key == other.key and all(
            other.inputs[name].shape[1:] == array.shape[1:] and other.inputs[name].dtype == array.dtype
            for name, array in self.inputs.items()
        )


class TfliteScheduler:
    def __init__(
        self,
        run: Callable[[str, Arrays], Arrays],
        threads: int,
        interpreters_per_pool: int,
        model_batch_size: int = -1,
    ) -> None:
        """`run(key, inputs)` runs one execution on a free interpreter; `threads` take calls at once. A
        model whose one input has a fixed batch size above 1 runs executions of that size instead."""
        self._run = run
        per_pool_rows = -(-MAX_BATCH_ROWS // interpreters_per_pool)
        self.max_rows = model_batch_size if model_batch_size > 1 else per_pool_rows
        self._queue: deque[_Call] = deque()
        self._ready = threading.Condition()
        self._closed = False
        for number in range(threads):
            threading.Thread(target=self._work, name=f"tflite-batch-{number}", daemon=True).start()

    def __call__(self, key: str, inputs: Arrays) -> Arrays:
        sizes = {len(array) for array in inputs.values() if array.ndim}
        if len(sizes) != 1 or any(array.ndim == 0 for array in inputs.values()):
            raise invalid_argument("Batching Run() input tensors must have equal 0th-dimension size")
        (rows,) = sizes
        if rows > MAX_BATCH_ROWS:
            raise invalid_argument(
                f"Task size {rows} is larger than maximum input batch size {MAX_BATCH_ROWS}"
            )
        call = _Call(key, inputs, rows)
        with self._ready:
            if self._closed:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "the model version is unloading")
            self._queue.append(call)
            self._ready.notify()
        return call.answer.result()

    def close(self) -> None:
        """Let the threads end once the queue is empty (an unload waits for its requests first)."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closed:
                    self._ready.wait()
                if not self._queue:
                    return
                batch = self._take()
            self._execute(batch)

    def _take(self) -> list[_Call]:
        """The first queued call and every later one that fits beside it within max_rows."""
        first = self._queue.popleft()
        batch, rows = [first], first.rows
        for call in list(self._queue):
            if rows >= self.max_rows:
                break
            if rows + call.rows <= self.max_rows and first.fits(call):
                self._queue.remove(call)
                batch.append(call)
                rows += call.rows
        return batch

    def _execute(self, batch: list[_Call]) -> None:
        """Run the calls as one (in parts of at most max_rows) and give each its rows of every output."""
        try:
            merged = {name: np.concatenate([c.inputs[name] for c in batch]) for name in batch[0].inputs}
            total = sum(c.rows for c in batch)
            parts = [
                self._run(
                    batch[0].key,
                    {name: array[start : start + self.max_rows] for name, array in merged.items()},
                )
                for start in range(0, max(total, 1), self.max_rows)
            ]
            if any(array.ndim == 0 for part in parts for array in part.values()):
                raise ServingError(grpc.StatusCode.INTERNAL, "Tensor split operation failed: a scalar output")
            outputs = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
            if any(len(array) != total for array in outputs.values()):
                raise ServingError(
                    grpc.StatusCode.INTERNAL,
                    "Tensor split operation failed: an output's rows are not the batch's",
                )
            start = 0
            for call in batch:
                call.answer.set_result(
                    {name: array[start : start + call.rows] for name, array in outputs.items()}
                )
                start += call.rows
        except Exception as err:  # every caller hears of it; none waits forever
            for call in batch:
                if not call.answer.done():
                    call.answer.set_exception(err)
