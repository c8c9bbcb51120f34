"""dashboard/monitor.py in process: TF Serving's metrics as our server writes them, read back into rates
and percentiles; replicas that fail or vanish; a metrics endpoint that is off."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dashboard.monitor import Monitor, Reading, combined, parse, quantile, window
from serving.metrics import ServingMetrics

pytestmark = pytest.mark.fast

PATH = "/monitoring/prometheus/metrics"


def traffic(metrics: ServingMetrics, ok: int, refused: int = 0, seconds: float = 0.001) -> None:
    for _ in range(ok):
        metrics.observe_request("mnist", "grpc", "Predict", "OK", seconds)
    for _ in range(refused):
        metrics.observe_request("mnist", "rest", "predict", "INVALID_ARGUMENT", seconds)


def test_parse_reads_one_models_counters_from_the_servers_own_exposition() -> None:
    metrics = ServingMetrics()
    traffic(metrics, ok=5, refused=2)
    metrics.observe_request("other", "grpc", "Predict", "OK", 0.5)
    for _ in range(3):  # health checks: REST model status, counted and timed by TF Serving under API ""
        metrics.observe_request("mnist", "rest", "", "OK", 2.0)
    metrics.observe_batch("mnist", 12)
    reading = parse(metrics.exposition().decode(), "mnist")
    assert reading.requests == {"OK": 5, "INVALID_ARGUMENT": 2}
    # Neither the other model's slow request nor the health checks, nor the failures (never timed)
    assert reading.latency_us[math.inf] == 5
    assert reading.batch_sizes[16.0] == 1 and reading.batch_sizes[8.0] == 0


def test_a_window_gives_rates_errors_and_percentiles() -> None:
    metrics = ServingMetrics()
    traffic(metrics, ok=10)
    before = parse(metrics.exposition().decode(), "mnist")
    traffic(metrics, ok=90, seconds=0.002)
    traffic(metrics, ok=0, refused=10, seconds=0.002)
    after = parse(metrics.exposition().decode(), "mnist")
    w = window(before, after, seconds=2.0)
    assert w.requests_per_s == pytest.approx(50.0)
    assert w.errors_per_s == {"INVALID_ARGUMENT": pytest.approx(5.0)}
    p50 = w.latency_ms(0.5)
    # 2 ms, interpolated within its bucket (1.98-3.57 ms): the earlier 1 ms requests are not in the window
    assert p50 is not None and 1.98 < p50 < 3.57
    assert w.mean_batch_size is None  # no batched call


def test_a_restarted_server_counts_from_zero() -> None:
    before = Reading({"OK": 1000.0}, {10.0: 1000.0, math.inf: 1000.0}, {})
    after = Reading({"OK": 30.0}, {10.0: 30.0, math.inf: 30.0}, {})
    w = window(before, after, seconds=3.0)
    assert w.requests_per_s == pytest.approx(10.0)
    assert sum(w.latency_us.values()) == 30


def test_quantile_interpolates_within_the_bucket() -> None:
    per_bucket = {10.0: 100.0, 20.0: 100.0, math.inf: 0.0}
    assert quantile(0.5, per_bucket) == pytest.approx(10.0)
    assert quantile(0.99, per_bucket) == pytest.approx(19.8)
    assert quantile(0.5, {10.0: 0.0}) is None


def test_replicas_windows_add_up() -> None:
    one = window(Reading({}, {}, {}), Reading({"OK": 20.0}, {}, {}), 2.0)
    two = window(Reading({}, {}, {}), Reading({"OK": 40.0, "UNAVAILABLE": 2.0}, {}, {}), 2.0)
    both = combined([one, two])
    assert both is not None and both.requests_per_s == pytest.approx(31.0)
    assert combined([]) is None


class FakeServer(BaseHTTPRequestHandler):
    """A server's metrics and model status, or 404 for the metrics when `metrics` is None."""

    metrics: ServingMetrics | None

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == PATH and self.metrics is not None:
            body = self.metrics.exposition()
        elif self.path == "/v1/models/mnist":
            body = (
                b'{"model_version_status": [{"version": "3", "state": "AVAILABLE",'
                b' "status": {"error_code": "OK", "error_message": ""}}]}'
            )
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def serve(metrics: ServingMetrics | None) -> Iterator[int]:
    handler = type("Handler", (FakeServer,), {"metrics": metrics})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def metrics() -> ServingMetrics:
    return ServingMetrics()


@pytest.fixture
def metrics_port(metrics: ServingMetrics) -> Iterator[int]:
    traffic(metrics, ok=4)
    yield from serve(metrics)


def test_the_monitor_reads_a_replica_and_its_version(metrics: ServingMetrics, metrics_port: int) -> None:
    monitor = Monitor(f"http://localhost:{metrics_port}{PATH}", "mnist")
    monitor.read_all()
    traffic(metrics, ok=10)
    monitor.read_all()
    problem, replicas, rounds = monitor.snapshot()
    assert problem is None and [r.address for r in replicas] == ["127.0.0.1"]  # localhost is one server
    assert replicas[0].version == 3 and replicas[0].problem is None
    assert rounds[0].windows == {} and sum(rounds[1].windows["127.0.0.1"].requests.values()) == 10


def test_metrics_off_and_a_server_down_are_sentences() -> None:
    for port in serve(None):
        monitor = Monitor(f"http://127.0.0.1:{port}{PATH}", "mnist")
        monitor.read_all()
        _, replicas, _ = monitor.snapshot()
        assert "--monitoring_config_file" in str(replicas[0].problem)
        assert replicas[0].version == 3  # the server itself answers
    monitor.read_all()  # the server is gone now
    _, replicas, _ = monitor.snapshot()
    assert str(replicas[0].problem).startswith("not answering")


def test_a_vanished_replica_and_an_unknown_name(metrics_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monitor = Monitor(f"http://serving:{metrics_port}{PATH}", "mnist")
    monkeypatch.setattr(monitor, "addresses", lambda: ["127.0.0.1", "127.0.0.2"])
    monitor.read_all()
    monkeypatch.setattr(monitor, "addresses", lambda: ["127.0.0.1"])
    monitor.read_all()
    _, replicas, _ = monitor.snapshot()
    gone = {r.address: r.gone_since is not None for r in replicas}
    assert gone == {"127.0.0.1": False, "127.0.0.2": True}

    def unknown() -> list[str]:
        raise OSError("Name or service not known")

    monkeypatch.setattr(monitor, "addresses", unknown)
    monitor.read_all()
    problem, _, _ = monitor.snapshot()
    assert problem == "cannot resolve serving: Name or service not known"


@pytest.mark.parametrize("url", ["http://localhost:99999/metrics", "http://[::1/metrics"])
def test_a_metrics_url_that_is_no_url_is_a_sentence_not_a_dead_thread(url: str) -> None:
    """The monitor's thread met a ValueError there and died, and the page waited for ever."""
    monitor = Monitor(url, "mnist")
    monitor.read_all()
    problem, _, _ = monitor.snapshot()
    assert f"SERVING_METRICS={url!r} is not a metrics URL" in str(problem)
