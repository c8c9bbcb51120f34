"""Server-side batching: concurrent requests merged into one model call, the result split back.

Semantics follow TF Serving's BatchingParameters: a batch is run when it holds `max_batch_size`
examples or when its oldest request has waited `batch_timeout_micros`; at most `max_enqueued_batches`
batches wait; `num_batch_threads` batches run at once. A request larger than `max_batch_size` is
refused, as TF Serving does without large-batch splitting.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import grpc
import numpy as np
from google.protobuf.message import Message

from serving.errors import ServingError, invalid_argument

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int = 1000
    batch_timeout_s: float = 0.0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 2

    @classmethod
    def from_proto(cls, params: Message, cores: int) -> BatchPolicy:
        """TF Serving's defaults for whatever the BatchingParameters file leaves out."""

        def value(name: str, default: int) -> int:
            return getattr(params, name).value if params.HasField(name) else default

        policy = cls(
            max_batch_size=value("max_batch_size", 1000),
            batch_timeout_s=value("batch_timeout_micros", 0) / 1e6,
            max_enqueued_batches=value("max_enqueued_batches", 10),
            num_batch_threads=value("num_batch_threads", cores),
        )
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(policy, name) < 1:
                raise ValueError(f"batching parameter {name} must be at least 1, got {getattr(policy, name)}")
        return policy


@dataclass
class _Task:
    inputs: Arrays
    size: int
    done: Future[Arrays] = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)


class BatchQueue:
    """The queue of one signature of one version (same output filter, same example shape)."""

    def __init__(
        self, run: Callable[[Arrays], Arrays], policy: BatchPolicy, name: str, on_batch: Callable[[int], None]
    ) -> None:
        self._run, self._policy, self._on_batch = run, policy, on_batch
        self._tasks: deque[_Task] = deque()
        self._pending = 0
        self._closed = False
        self._cond = threading.Condition()
        self._threads = [
            threading.Thread(target=self._work, name=f"batch-{name}-{i}", daemon=True)
            for i in range(policy.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, inputs: Arrays) -> Arrays:
        size = len(next(iter(inputs.values())))
        if size > self._policy.max_batch_size:
            raise invalid_argument(
                f"Task size {size} is larger than maximum input batch size {self._policy.max_batch_size}"
            )
        task = _Task(inputs, size)
        with self._cond:
            limit = self._policy.max_enqueued_batches * self._policy.max_batch_size
            if self._closed or self._pending + size > limit:
                raise ServingError(
                    grpc.StatusCode.UNAVAILABLE,
                    "The batch scheduling queue to which this task was submitted is full",
                )
            self._tasks.append(task)
            self._pending += size
            self._cond.notify()
        return task.done.result()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def _next_batch(self) -> list[_Task] | None:
        """Block until a batch is full or its oldest task has waited long enough; None when closed."""
        with self._cond:
            while True:
                if self._tasks:
                    wait = self._tasks[0].arrived + self._policy.batch_timeout_s - time.monotonic()
                    if self._pending >= self._policy.max_batch_size or wait <= 0 or self._closed:
                        break
                    self._cond.wait(wait)
                elif self._closed:
                    return None
                else:
                    self._cond.wait()
            batch, size = [], 0
            while self._tasks and size + self._tasks[0].size <= self._policy.max_batch_size:
                task = self._tasks.popleft()
                batch.append(task)
                size += task.size
            self._pending -= size
            return batch

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                merged = {k: np.concatenate([t.inputs[k] for t in batch]) for k in batch[0].inputs}
                self._on_batch(sum(t.size for t in batch))
                outputs = self._run(merged)
                starts = np.cumsum([0] + [t.size for t in batch])
                if any(np.ndim(v) == 0 or len(v) != starts[-1] for v in outputs.values()):
                    raise ServingError(
                        grpc.StatusCode.INTERNAL, "an output's batch size differs from the input's"
                    )
                bounds = zip(starts[:-1], starts[1:], strict=True)
                parts = [{k: v[a:b] for k, v in outputs.items()} for a, b in bounds]
            except Exception as err:  # every waiting request gets the failure, the thread lives on
                for task in batch:
                    task.done.set_exception(err)
                continue
            for task, part in zip(batch, parts, strict=True):
                task.done.set_result(part)


class Batcher:
    """The batch queues of one servable, created on first use, closed when it unloads."""

    def __init__(
        self, policy: BatchPolicy, name: str, on_batch: Callable[[int], None] = lambda _: None
    ) -> None:
        """`on_batch(size)` hears of every merged model call (the batch-size metric)."""
        self._policy, self._name, self._on_batch = policy, name, on_batch
        self._queues: dict[tuple[object, ...], BatchQueue] = {}
        self._lock = threading.Lock()
        self._closed = False

    def run(self, key: tuple[object, ...], inputs: Arrays, call: Callable[[Arrays], Arrays]) -> Arrays:
        shapes = tuple(sorted((k, v.shape[1:]) for k, v in inputs.items()))
        with self._lock:
            if self._closed:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, f"{self._name} has been unloaded")
            queue = self._queues.get((key, shapes))
            if queue is None:
                queue = self._queues[(key, shapes)] = BatchQueue(
                    call, self._policy, self._name, self._on_batch
                )
        return queue.submit(inputs)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            queues, self._queues = list(self._queues.values()), {}
        for queue in queues:
            queue.close()
