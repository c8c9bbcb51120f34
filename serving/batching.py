"""Server-side batching: concurrent requests merged into one model call, the result split back.

Semantics follow TF Serving's BatchingParameters: a batch is run when it holds `max_batch_size`
examples or when its oldest request has waited `batch_timeout_micros`; at most `max_enqueued_batches`
batches wait; `num_batch_threads` batches run at once (on the model pool's threads; the server caps it
at one fewer than the cores, see leave_a_core_to_the_loop). A request larger than `max_batch_size` is
refused, as TF Serving does without large-batch splitting (which this server does not do); a merged
batch is padded up to the first of `allowed_batch_sizes` that holds it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import grpc
import numpy as np

from serving.errors import ServingError, invalid_argument
from serving.model_pool import ModelPool
from tfs_api.batching_pb2 import BatchingParameters

Arrays = dict[str, np.ndarray]
IntParameter = Literal[
    "max_batch_size",
    "batch_timeout_micros",
    "max_enqueued_batches",
    "num_batch_threads",
    "max_execution_batch_size",
]  # BatchingParameters' Int64Value fields


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int = 1000
    batch_timeout_s: float = 0.0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 2
    allowed_batch_sizes: tuple[int, ...] = ()  # a merged batch is padded up to the first that holds it

    @classmethod
    def from_proto(cls, params: BatchingParameters, cores: int) -> BatchPolicy:
        """TF Serving's defaults for whatever the BatchingParameters file leaves out; a file that would
        fail every load in TF Serving is refused in its words."""

        def value(name: IntParameter, default: int) -> int:
            return getattr(params, name).value if params.HasField(name) else default

        policy = cls(
            max_batch_size=value("max_batch_size", 1000),
            batch_timeout_s=value("batch_timeout_micros", 0) / 1e6,
            max_enqueued_batches=value("max_enqueued_batches", 10),
            num_batch_threads=value("num_batch_threads", cores),
            allowed_batch_sizes=tuple(params.allowed_batch_sizes),
        )
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(policy, name) < 1:
                raise ValueError(f"batching parameter {name} must be at least 1, got {getattr(policy, name)}")
        if policy.batch_timeout_s < 0:  # TensorFlow's shared_batch_scheduler.h, AddQueue
            raise ValueError(
                f"batch_timeout_micros must be non-negative; was {value('batch_timeout_micros', 0)}"
            )
        splitting = (
            params.HasField("enable_large_batch_splitting") and params.enable_large_batch_splitting.value
        )
        _check_allowed_sizes(
            policy, value("max_execution_batch_size", policy.max_batch_size) if splitting else None
        )
        return policy

    def padded_size(self, size: int) -> int:
        """RoundToLowestAllowedBatchSize (batching/batching_util.cc:211-228)."""
        return next((allowed for allowed in self.allowed_batch_sizes if allowed >= size), size)


def _check_allowed_sizes(policy: BatchPolicy, max_execution_batch_size: int | None) -> None:
    """TF Serving's checks of allowed_batch_sizes, without large-batch splitting
    (bundle_factory_util.cc:113-125) and with it (batching/batching_session.cc:1012-1038)."""
    allowed = policy.allowed_batch_sizes
    if not allowed:
        return
    if max_execution_batch_size is None:
        if allowed[-1] != policy.max_batch_size:
            raise ValueError(
                "Last entry in allowed_batch_sizes must match max_batch_size; "
                f"last entry was {allowed[-1]}; expected {policy.max_batch_size}"
            )
        return
    if any(later <= earlier for earlier, later in itertools.pairwise(allowed)):
        raise ValueError("allowed_batch_sizes entries must be monotonically increasing")
    if allowed[-1] > policy.max_batch_size:
        raise ValueError(
            "Last entry in allowed_batch_sizes must be less than or equal to max_batch_size; "
            f"last entry was {allowed[-1]}; expected {policy.max_batch_size}"
        )
    if allowed[-1] != max_execution_batch_size:
        raise ValueError(
            "Last entry in allowed_batch_sizes must be equal to max_execution_batch_size; "
            f"last entry was {allowed[-1]}; expected {max_execution_batch_size}"
        )


def leave_a_core_to_the_loop(policy: BatchPolicy, cores: int) -> BatchPolicy:
    """At most `cores - 1` batches at once (one at least): this server parses and answers every request
    on one Python loop, and the Python of a model call needs the same lock. A second batch beside the
    loop on two cores puts three busy threads on two cores, and each request costs more. Measured with
    the compose flags at 32 connections on 2 cores (docs/benchmarks.md): one batch at a time took
    0.45-0.47 ms of CPU a REST request against 0.49-0.57 ms, in larger batches and with a lower p99.
    TF Serving's C++ front doors take no such lock, so the shared file keeps its value for it."""
    return dataclasses.replace(policy, num_batch_threads=max(1, min(policy.num_batch_threads, cores - 1)))


def task_size(inputs: Arrays, policy: BatchPolicy) -> int:
    """A request's examples: every input's first dimension, which must agree. More than a batch holds is
    refused, as TF Serving without splitting does."""
    if not inputs or any(np.ndim(value) == 0 for value in inputs.values()):
        raise invalid_argument("Batching Run() input tensors must have at least one dimension")
    sizes = {len(value) for value in inputs.values()}
    if len(sizes) > 1:
        raise invalid_argument("Batching Run() input tensors must have equal 0th-dimension size")
    (size,) = sizes
    if size > policy.max_batch_size:
        raise invalid_argument(
            f"Task size {size} is larger than maximum input batch size {policy.max_batch_size}"
        )
    return size


@dataclass
class _Task:
    inputs: Arrays
    size: int
    done: asyncio.Future[Arrays]
    arrived: float = field(default_factory=time.monotonic)


class BatchQueue:
    """The queue of one signature of one version (same output filter, same example shape).

    It lives on the event loop (no locks): requests wait as futures, a batch is formed when one of the
    `num_batch_threads` slots is free and the batch is full or its oldest request has waited long enough,
    and the merged call runs on the model pool. While every slot is busy, requests pile up, so the next
    batch is larger: under load the queue trades a little latency for a lot of throughput by itself.
    """

    def __init__(
        self,
        run: Callable[[Arrays], Arrays],
        policy: BatchPolicy,
        pool: ModelPool,
        on_batch: Callable[[int], None],
    ) -> None:
        self._run, self._policy, self._pool, self._on_batch = run, policy, pool, on_batch
        self._tasks: deque[_Task] = deque()
        self._pending = 0  # examples waiting
        self._running = 0  # batches running
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    async def submit(self, inputs: Arrays) -> Arrays:
        size = task_size(inputs, self._policy)
        limit = self._policy.max_enqueued_batches * self._policy.max_batch_size
        if self._closed or self._pending + size > limit:
            raise ServingError(
                grpc.StatusCode.UNAVAILABLE,
                "The batch scheduling queue to which this task was submitted is full",
            )
        task = _Task(inputs, size, asyncio.get_running_loop().create_future())
        self._tasks.append(task)
        self._pending += size
        self._schedule()
        return await task.done

    def close(self) -> None:
        """Refuse what still waits (an unload waits for requests in flight first, so normally nothing)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        while self._tasks:
            task = self._tasks.popleft()
            if not task.done.done():
                task.done.set_exception(ServingError(grpc.StatusCode.UNAVAILABLE, "the model was unloaded"))
        self._pending = 0

    def _schedule(self) -> None:
        """Start every batch that is due and has a free slot; otherwise wake up when the oldest is due."""
        while self._tasks and self._running < self._policy.num_batch_threads:
            wait = self._tasks[0].arrived + self._policy.batch_timeout_s - time.monotonic()
            if self._pending < self._policy.max_batch_size and wait > 0:
                if self._timer is None:
                    self._timer = asyncio.get_running_loop().call_later(wait, self._timer_fired)
                return
            batch = self._take()
            self._running += 1
            asyncio.get_running_loop().create_task(self._run_batch(batch))

    def _timer_fired(self) -> None:
        self._timer = None
        self._schedule()

    def _take(self) -> list[_Task]:
        batch, size = [], 0
        while self._tasks and size + self._tasks[0].size <= self._policy.max_batch_size:
            task = self._tasks.popleft()
            batch.append(task)
            size += task.size
        self._pending -= size
        return batch

    async def _run_batch(self, batch: list[_Task]) -> None:
        try:
            parts = await self._pool.run(lambda: self._merged_call(batch))
        except Exception as err:  # every waiting request gets the failure; the queue lives on
            for task in batch:
                if not task.done.done():  # a caller that gave up has cancelled its future
                    task.done.set_exception(err)
        else:
            for task, part in zip(batch, parts, strict=True):
                if not task.done.done():
                    task.done.set_result(part)
        finally:
            self._running -= 1
            self._schedule()

    def _merged_call(self, batch: list[_Task]) -> list[Arrays]:
        """On a pool thread: merge, call the model once, split the outputs back by rows."""
        merged = {k: np.concatenate([t.inputs[k] for t in batch]) for k in batch[0].inputs}
        outputs = padded_call(self._run, merged, [t.size for t in batch], self._policy, self._on_batch)
        starts = np.cumsum([0] + [t.size for t in batch])
        return [{k: v[a:b] for k, v in outputs.items()} for a, b in zip(starts[:-1], starts[1:], strict=True)]


def padded_call(
    call: Callable[[Arrays], Arrays],
    merged: Arrays,
    sizes: list[int],
    policy: BatchPolicy,
    on_batch: Callable[[int], None],
) -> Arrays:
    """One model call of a merged batch of requests of `sizes` examples, padded up to the first allowed
    batch size that holds it, as TF Serving's batching session pads (batching/batching_session.cc:
    495-562): the padding repeats the first example of the last request, the batch-size metric counts
    the padded size, the padding's outputs are dropped. Ours: when the last request has no examples,
    the last that has one gives the padding, and a batch with none runs unpadded (what TF Serving does
    then cannot be told from its source: it slices a row the tensor does not have)."""
    size = sum(sizes)
    padded = policy.padded_size(size)
    if padded > size and size == 0:  # no request has a row to pad with
        padded = 0
    on_batch(padded)
    if padded > size:  # only then look for the row: most servers set no allowed sizes
        last_with_rows = max(i for i, n in enumerate(sizes) if n)
        source = sum(sizes[:last_with_rows])
        merged = {
            k: np.concatenate([v, np.repeat(v[source : source + 1], padded - size, axis=0)])
            for k, v in merged.items()
        }
    outputs = call(merged)
    if any(np.ndim(v) == 0 or len(v) != padded for v in outputs.values()):
        raise ServingError(grpc.StatusCode.INTERNAL, "an output's batch size differs from the input's")
    return {k: v[:size] for k, v in outputs.items()} if padded > size else outputs


class Batcher:
    """The batch queues of one servable, created on first use, closed when it unloads."""

    def __init__(
        self,
        policy: BatchPolicy,
        name: str,
        pool: ModelPool,
        on_batch: Callable[[int], None] = lambda _: None,
    ) -> None:
        """`on_batch(size)` hears of every merged model call (the batch-size metric)."""
        self._policy, self._name, self._pool, self._on_batch = policy, name, pool, on_batch
        self._queues: dict[tuple[object, ...], BatchQueue] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # the queues' loop, once there are queues
        self._closed = False

    async def run(self, key: tuple[object, ...], inputs: Arrays, call: Callable[[Arrays], Arrays]) -> Arrays:
        if self._closed:
            raise ServingError(grpc.StatusCode.UNAVAILABLE, f"{self._name} has been unloaded")
        self._loop = asyncio.get_running_loop()
        shapes = tuple(sorted((k, v.shape[1:]) for k, v in inputs.items()))
        queue = self._queues.get((key, shapes))
        if queue is None:
            queue = self._queues[(key, shapes)] = BatchQueue(call, self._policy, self._pool, self._on_batch)
        return await queue.submit(inputs)

    def run_alone(self, inputs: Arrays, call: Callable[[Arrays], Arrays]) -> Arrays:
        """On the calling thread, a batch of this one request: warm-up, which runs before the version
        serves and so has nobody to share a batch with (TF Serving runs it through the batcher too)."""
        size = task_size(inputs, self._policy)
        return padded_call(call, inputs, [size], self._policy, self._on_batch)

    def close(self) -> None:
        """At an unload, once no request is in flight: nothing waits in a queue any more. Called from
        the thread that unloads; the queues are closed on their own loop, which they live on."""
        self._closed = True
        queues, self._queues = list(self._queues.values()), {}
        if queues and self._loop is not None and not self._loop.is_closed():

            def close_queues() -> None:
                for queue in queues:
                    queue.close()

            self._loop.call_soon_threadsafe(close_queues)
