"""Prometheus metrics under TF Serving's own names and labels, so dashboards built for it work unchanged.

TF Serving registers TensorFlow monitoring metrics (`/tensorflow/serving/request_count`, ...) and its
Prometheus exporter writes them with the slashes as colons; latencies are in microseconds, histogram
buckets as TF Serving's samplers define them. Counters are written under their exact names (no `_total`
suffix, as TF Serving writes them), hence a collector of our own on prometheus_client's registry.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import HistogramMetricFamily, Metric

# Exponential(scale 10, growth 1.8, 33 buckets): TF Serving's request, runtime and warm-up latency samplers.
LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))
BATCH_SIZE_BUCKETS = tuple(float(2**i) for i in range(15))


class Histogram:
    """Cumulative bucket counts and the sum, per label values."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.cells: dict[tuple[str, ...], list[float]] = defaultdict(lambda: [0.0] * (len(buckets) + 2))

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        cell = self.cells[labels]  # [count per bucket..., count over the last bucket, sum]
        index = bisect.bisect_left(self.buckets, value)  # the first bucket whose bound is >= value
        cell[index] += 1
        cell[-1] += value

    def family(self, name: str, documentation: str, label_names: list[str]) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=label_names)
        for labels, cell in self.cells.items():
            running, buckets = 0.0, []
            for bound, count in zip((*map(repr, self.buckets), "+Inf"), cell[:-1], strict=True):
                running += count
                buckets.append((bound, running))
            family.add_metric(list(labels), buckets, cell[-1])
        return family


class ServingMetrics:
    """One set per server, so two servers in one process (tests) never share counts."""

    def __init__(self, serves: Callable[[str], bool] = lambda _: True) -> None:
        """`serves(name)`: whether the server's config names that model. Requests for any other name
        are counted under the model name "" (TF Serving labels them with whatever name they sent, so a
        client sending endless names grows its metrics page without bound)."""
        self._serves = serves
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str], float] = defaultdict(float)  # (model_name, status)
        self.request_latency = Histogram(LATENCY_BUCKETS_US)  # (model_name, API, entrypoint)
        self.runtime_latency = Histogram(LATENCY_BUCKETS_US)  # (model_name, API, runtime)
        self.loads: dict[tuple[str, str], float] = defaultdict(float)  # (model_path, status)
        self.load_latency: dict[str, float] = defaultdict(float)  # model_path: microseconds
        self.batch_sizes = Histogram(BATCH_SIZE_BUCKETS)
        self.warmup_latency = Histogram(LATENCY_BUCKETS_US)  # (model_path, status)
        self.warmup_records: dict[tuple[str, str], float] = defaultdict(float)  # (model_path, status)
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def observe_request(self, model: str, door: str, api: str, code: str, seconds: float) -> None:
        """A request answered: `door` grpc or rest, `api` TF Serving's label for it (gRPC's `Predict`,
        REST's `predict`, or "" for a REST status or metadata call). Every request is counted, only
        successful ones are timed, as TF Serving does."""
        model = model if self._serves(model) else ""
        with self._lock:
            self.requests[model, code] += 1
            if code == "OK":
                self.request_latency.observe((model, api, door.upper()), seconds * 1e6)

    def observe_runtime(self, model: str, method: str, runtime: str, seconds: float) -> None:
        with self._lock:
            self.runtime_latency.observe((model, method, runtime), seconds * 1e6)

    def observe_load(
        self, model: str, version: int, path: Path, seconds: float, ok: bool, saved_model: bool
    ) -> None:
        """A version loaded (or failed to). TensorFlow's SavedModel loader counts its loads by path; a
        version run from model.tflite never reaches it, so TF Serving shows no load of it."""
        if not saved_model:
            return
        with self._lock:
            self.loads[str(path), "success" if ok else "fail"] += 1
            if ok:
                self.load_latency[str(path)] += seconds * 1e6

    def observe_warmup(self, path: Path, seconds: float, records: int, status: str) -> None:
        """A version's warm-up file read (saved_model_warmup_util.cc:51-63,209-214)."""
        with self._lock:
            self.warmup_latency.observe((str(path), status), seconds * 1e6)
            self.warmup_records[str(path), status] += records

    def observe_batch(self, model: str, size: int) -> None:
        """A merged model call of `size` examples (TF Serving's histogram has no model label)."""
        with self._lock:
            self.batch_sizes.observe((), size)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            yield _counter(
                ":tensorflow:serving:request_count",
                "The total number of requests.",
                ["model_name", "status"],
                self.requests,
            )
            yield self.request_latency.family(
                ":tensorflow:serving:request_latency",
                "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
                ["model_name", "API", "entrypoint"],
            )
            yield self.runtime_latency.family(
                ":tensorflow:serving:runtime_latency",
                "Distribution of wall time (in microseconds) for Tensorflow runtime.",
                ["model_name", "API", "runtime"],
            )
            yield _counter(
                ":tensorflow:cc:saved_model:load_attempt_count",
                "The number of times a SavedModel was successfully loaded.",
                ["model_path", "status"],
                self.loads,
            )
            yield _counter(
                ":tensorflow:cc:saved_model:load_latency",
                "Latency in microseconds for SavedModels that were successfully loaded.",
                ["model_path"],
                {(path,): value for path, value in self.load_latency.items()},
            )
            yield self.warmup_latency.family(
                ":tensorflow:serving:model_warmup_latency",
                "Distribution of wall time (in microseconds) for warming up the model.",
                ["model_path", "status"],
            )
            yield _counter(
                ":tensorflow:serving:model_warmup_records_read",
                "Total number of warmup records read during model warmup.",
                ["model_path", "status"],
                self.warmup_records,
            )
            yield self.batch_sizes.family(
                ":tensorflow:serving:batching_session:processed_batch_size",
                "Tracks the batch size distribution on processing.",
                [],
            )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _counter(name: str, documentation: str, label_names: list[str], cells: dict) -> Metric:
    """A counter sample under its bare name, as TF Serving writes it. Declared untyped: prometheus_client
    would otherwise announce it as NAME_total, a name with no samples."""
    metric = Metric(name, documentation, "unknown")
    for labels, value in cells.items():
        metric.add_sample(name, dict(zip(label_names, labels, strict=True)), value)
    return metric
