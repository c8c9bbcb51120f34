"""Prometheus metrics: requests (by status code) and latency per model, version and API; model loads."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class ServingMetrics:
    """One registry per server, so two servers in one process (tests) never share counts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("model", "version", "api", "method")
        self.requests = Counter(
            "serving_requests",
            "Requests answered, by status code.",
            (*labels, "code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "serving_request_latency_seconds",
            "Time from request to answer.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.loads = Counter(
            "serving_model_loads",
            "Model version loads, by outcome.",
            ("model", "outcome"),
            registry=self.registry,
        )
        self.load_seconds = Histogram(
            "serving_model_load_seconds",
            "Time to load and warm a model version.",
            ("model",),
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=self.registry,
        )

        self.batch_size = Histogram(
            "serving_batch_size",
            "Examples per merged model call (with --enable_batching).",
            ("model",),
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=self.registry,
        )

    def observe_batch(self, model: str, size: int) -> None:
        self.batch_size.labels(model).observe(size)

    def observe_request(
        self, model: str, version: str, api: str, method: str, code: str, seconds: float
    ) -> None:
        self.requests.labels(model, version, api, method, code).inc()
        self.latency.labels(model, version, api, method).observe(seconds)

    def observe_load(self, model: str, version: int, seconds: float, ok: bool) -> None:
        self.loads.labels(model, "ok" if ok else "error").inc()
        self.load_seconds.labels(model).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
