"""The serving monitor's figures, read from the model servers' Prometheus endpoints under TF Serving's names.

Each replica is read on its own: the metrics address's host name is resolved to every address it has (in
Compose a service's name resolves to each of its replicas, in Kubernetes a headless Service's does), so the
balancer in front never mixes them. Rates are differences between two reads of the same counters, and
percentiles come from the difference of two reads of the latency histogram, as Prometheus's rate() and
histogram_quantile() compute them; a counter that went down means the server restarted and counts from 0.
Nothing here is special to our server: TF Serving started with `--monitoring_config_file` is read alike.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
from prometheus_client.parser import text_string_to_metric_families

from client import ServingClient, ServingClientError

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
BATCH_SIZE = ":tensorflow:serving:batching_session:processed_batch_size"

Buckets = dict[float, float]  # upper bound -> count (cumulative in a read, per bucket in a window)


@dataclass(frozen=True)
class Reading:
    """One read of one replica's counters, for one model: its prediction traffic (Predict, Classify,
    Regress), not the successful status and metadata calls that health checks and this monitor make."""

    requests: dict[str, float]  # status (OK, INVALID_ARGUMENT, ...) -> requests so far
    latency_us: Buckets  # cumulative, every prediction API and door together
    batch_sizes: Buckets  # cumulative; TF Serving's histogram has no model label


def parse(text: str, model: str) -> Reading:
    """The counters of `model` in a Prometheus text exposition; absent ones read as zero.

    TF Serving counts every REST status and metadata call in request_count and times it under the API
    label "", so the successful predictions are taken from the latency histogram's count of the
    prediction APIs, and only the failures from request_count, which has no API label: a status call
    that fails (NOT_FOUND before the first version) counts among them."""
    requests_by_status: dict[str, float] = {"OK": 0.0}
    latency: Buckets = {}
    batches: Buckets = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            mine = labels.get("model_name") == model
            if sample.name == REQUEST_COUNT and mine and labels.get("status", "") != "OK":
                status = labels.get("status", "")
                requests_by_status[status] = requests_by_status.get(status, 0.0) + sample.value
            elif mine and labels.get("API") and sample.name == f"{REQUEST_LATENCY}_count":
                requests_by_status["OK"] += sample.value
            elif mine and labels.get("API") and sample.name == f"{REQUEST_LATENCY}_bucket":
                bound = float(labels["le"])
                latency[bound] = latency.get(bound, 0.0) + sample.value
            elif sample.name == f"{BATCH_SIZE}_bucket":
                bound = float(labels["le"])
                batches[bound] = batches.get(bound, 0.0) + sample.value
    return Reading(requests_by_status, latency, batches)


def _increase(before: dict, after: dict) -> dict:
    """after - before per key; all of `after` when any count went down (the server restarted)."""
    if any(after.get(key, 0.0) < value for key, value in before.items()):
        before = {}
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


def _per_bucket(cumulative: Buckets) -> Buckets:
    counts, below = {}, 0.0
    for bound in sorted(cumulative):
        counts[bound], below = cumulative[bound] - below, cumulative[bound]
    return counts


def quantile(q: float, per_bucket: Buckets) -> float | None:
    """histogram_quantile: linear within the bucket the q-th observation falls in; None with no data."""
    total = sum(per_bucket.values())
    if total <= 0:
        return None
    rank, below, lower = q * total, 0.0, 0.0
    for bound in sorted(per_bucket):
        count = per_bucket[bound]
        if below + count >= rank and count > 0:
            if math.isinf(bound):
                return lower  # above the last finite bound: as Prometheus does, its lower edge
            return lower + (bound - lower) * (rank - below) / count
        below += count
        lower = bound
    return lower


@dataclass(frozen=True)
class Window:
    """What one replica did between two reads."""

    seconds: float
    requests: dict[str, float]  # status -> requests in the window
    latency_us: Buckets  # per bucket
    batch_sizes: Buckets  # per bucket

    @property
    def requests_per_s(self) -> float:
        return sum(self.requests.values()) / self.seconds

    @property
    def errors_per_s(self) -> dict[str, float]:
        return {s: n / self.seconds for s, n in self.requests.items() if s != "OK" and n > 0}

    def latency_ms(self, q: float) -> float | None:
        value = quantile(q, self.latency_us)
        return None if value is None else value / 1000

    @property
    def mean_batch_size(self) -> float | None:
        """From the buckets' upper bounds (powers of two): a figure to watch, not an exact mean."""
        batches = sum(self.batch_sizes.values())
        if batches <= 0:
            return None
        return sum(bound * n for bound, n in self.batch_sizes.items() if not math.isinf(bound)) / batches


def window(before: Reading, after: Reading, seconds: float) -> Window:
    return Window(
        seconds,
        _increase(before.requests, after.requests),
        _per_bucket(_increase(before.latency_us, after.latency_us)),
        _per_bucket(_increase(before.batch_sizes, after.batch_sizes)),
    )


def combined(windows: Iterable[Window]) -> Window | None:
    """Several replicas' windows of the same round as one server's: counts add, the span is shared."""
    windows = list(windows)
    if not windows:
        return None

    def added(parts: Iterable[dict]) -> dict:
        total: dict = {}
        for part in parts:
            for key, value in part.items():
                total[key] = total.get(key, 0.0) + value
        return total

    return Window(
        max(w.seconds for w in windows),
        added(w.requests for w in windows),
        added(w.latency_us for w in windows),
        added(w.batch_sizes for w in windows),
    )


@dataclass
class Replica:
    """What the monitor knows of one address: its last read, and why the last try failed if it did."""

    address: str
    last: Reading | None = None
    last_at: float = 0.0
    version: int | None = None  # the version that answers requests that name none
    problem: str | None = None
    gone_since: float | None = None  # no longer among the name's addresses


@dataclass(frozen=True)
class Round:
    """One pass over every replica: the wall time and each answering replica's window."""

    at: float
    windows: dict[str, Window]
    versions: dict[str, int | None]


@dataclass
class Monitor:
    """Reads every replica every `every` seconds in a thread of its own and keeps `keep` seconds of rounds.

    One per dashboard process, shared by every browser looking at the page, so the charts show the last
    minutes at once instead of starting empty for each visitor.
    """

    metrics_url: str
    model: str
    every: float = 2.0
    keep: float = 600.0
    problem: str | None = None  # why no replica could be found at all
    replicas: dict[str, Replica] = field(default_factory=dict)
    rounds: deque[Round] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _session: requests.Session = field(default_factory=requests.Session)
    _status_clients: dict[str, ServingClient] = field(default_factory=dict)  # one per replica address

    def start(self) -> Monitor:
        threading.Thread(target=self._run, name="serving-monitor", daemon=True).start()
        return self

    def _run(self) -> None:
        pause = threading.Event()  # never set: a pause between rounds, not a wait for anything
        while True:
            self.read_all()
            pause.wait(self.every)

    def addresses(self) -> list[str]:
        """Every address of the metrics URL's host: IPv4 where it has any (localhost is one server, not
        two), else IPv6."""
        parts = urlsplit(self.metrics_url)
        found = socket.getaddrinfo(parts.hostname or "localhost", parts.port or 80, type=socket.SOCK_STREAM)
        v4 = sorted({str(info[4][0]) for info in found if info[0] == socket.AF_INET})
        return v4 or sorted({f"[{info[4][0]}]" for info in found})

    def _url(self, address: str, path: str) -> str:
        parts = urlsplit(self.metrics_url)
        return f"{parts.scheme}://{address}:{parts.port or 80}{path}"

    def read_all(self) -> None:
        """One round: resolve the name, read each replica, record its window since its last read."""
        now = time.time()
        try:
            addresses = self.addresses()
        except ValueError as err:  # SERVING_METRICS is no URL (a port past 65535, `http://[::1`)
            with self._lock:
                self.problem = f"SERVING_METRICS={self.metrics_url!r} is not a metrics URL ({err}): set it"
            return
        except OSError as err:
            with self._lock:
                self.problem = f"cannot resolve {urlsplit(self.metrics_url).hostname}: {err}"
            return
        results = {address: self._read(address) for address in addresses}
        with self._lock:
            self.problem = None
            windows, versions = {}, {}
            for address, (reading, version, problem) in results.items():
                replica = self.replicas.setdefault(address, Replica(address))
                replica.gone_since, replica.problem, replica.version = None, problem, version
                if reading is not None:
                    if replica.last is not None and now > replica.last_at:
                        windows[address] = window(replica.last, reading, now - replica.last_at)
                    replica.last, replica.last_at = reading, now
                versions[address] = version
            for address, replica in list(self.replicas.items()):
                if address not in results and replica.gone_since is None:
                    replica.gone_since, replica.last = now, None
                elif replica.gone_since is not None and replica.gone_since < now - self.keep:
                    del self.replicas[address]
            self.rounds.append(Round(now, windows, versions))
            while self.rounds and self.rounds[0].at < now - self.keep:
                self.rounds.popleft()

    def _read(self, address: str) -> tuple[Reading | None, int | None, str | None]:
        """(reading, answering version, problem) of one replica; each a clear sentence when it fails."""
        path = urlsplit(self.metrics_url).path
        try:
            answer = self._session.get(self._url(address, path), timeout=2)
        except requests.RequestException as err:
            return None, None, f"not answering ({type(err).__name__})"
        version = self._version(address)
        if answer.status_code == 404:
            return (
                None,
                version,
                (
                    f"no metrics at {path}: start the server with --monitoring_config_file "
                    "(prometheus_config { enable: true })"
                ),
            )
        if answer.status_code != 200:
            return None, version, f"metrics answered HTTP {answer.status_code}"
        try:
            return parse(answer.text, self.model), version, None
        except ValueError as err:
            return None, version, f"metrics not in Prometheus's text format ({err})"

    def _version(self, address: str) -> int | None:
        """The newest AVAILABLE version (the one answering requests without a version), or None."""
        if address not in self._status_clients:
            self._status_clients[address] = ServingClient.rest(self._url(address, ""), timeout=2, retries=0)
        try:
            statuses = self._status_clients[address].status(self.model)
        except ServingClientError:
            return None
        return max((s.version for s in statuses if s.state == "AVAILABLE"), default=None)

    def snapshot(self) -> tuple[str | None, list[Replica], list[Round]]:
        """A consistent copy for a page to draw from while the thread goes on reading."""
        with self._lock:
            replicas = [Replica(**vars(r)) for r in self.replicas.values()]
            return self.problem, replicas, list(self.rounds)
