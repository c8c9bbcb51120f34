"""The model store: which versions of which models exist, are loading, answer, or failed.

It does what TF Serving's file-system source and availability-preserving manager do: poll each base
path, load (and warm) the versions the model's version policy asks for, route requests to AVAILABLE
versions only, and unload a superseded version once a newer one is AVAILABLE and the older one's
in-flight requests are done. A version whose directory is deleted is unloaded the same way: at once
when another aspired version serves, else once one does.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import grpc

from serving.batching import BatchPolicy
from serving.errors import ServingError, invalid_argument, not_found
from serving.model_pool import ModelPool
from serving.servable import Servable, runs_tflite
from serving.tflite import TflitePolicy
from serving.version_source import aspired_versions, present_versions
from serving.warmup import WarmupObserver
from tfs_api.tensorflow_serving.config import model_server_config_pb2

log = logging.getLogger("serving")

UNLOAD_GRACE_S = 30.0  # how long an unload waits for in-flight requests

# tensorflow_serving.apis.get_model_status_pb2.ModelVersionStatus.State names
LOADING, AVAILABLE, UNLOADING, END = "LOADING", "AVAILABLE", "UNLOADING", "END"


def settle_heap() -> None:
    """Collect garbage once, then exempt what survives (TensorFlow, the loaded models: millions of
    objects) from future collections. Otherwise every full collection walks them all, pausing every
    request for ~200 ms: JSON requests build hundreds of lists each and trigger one every few seconds.
    Called when the set of loaded versions changes, so an unloaded model's cycles are still freed."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


@dataclass
class VersionRecord:
    version: int
    state: str
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""
    servable: Servable | None = None
    failed_loads: int = 0  # while LOADING: attempts that failed so far
    retry_at: float | None = None  # while LOADING after a failed attempt: when to try again (monotonic)
    last_error: tuple[grpc.StatusCode, str] | None = None  # that attempt's, for END if no retry comes
    # END with an error, then no longer aspired: TF Serving forgets the failed load, and loads the
    # version afresh should the policy ask for it again (a newer version come and gone, say).
    flushed: bool = False


class ModelEntry:
    """One model of the config: its settings and the record of each version seen."""

    def __init__(self, config: model_server_config_pb2.ModelConfig) -> None:
        self.config = config
        self.records: dict[int, VersionRecord] = {}
        self.base_missing = False  # warned about once, not at every poll
        # The first of its versions to become AVAILABLE or END, as it was then: what a reload that
        # added this model waits for (TF Serving's WaitUntilModelsAvailable, server_core.cc:327-362).
        self.first_outcome: VersionRecord | None = None

    def settle(self, record: VersionRecord) -> None:
        """Put a version's final record (AVAILABLE, or END after a failed load) in place."""
        self.records[record.version] = record
        if self.first_outcome is None:
            self.first_outcome = replace(record, servable=None)

    @property
    def name(self) -> str:
        return self.config.name

    def available(self) -> list[int]:
        return sorted(v for v, r in self.records.items() if r.state == AVAILABLE)


class ModelStore:
    def __init__(
        self,
        config: model_server_config_pb2.ModelServerConfig,
        pool: ModelPool,
        warm_up_iterations: int = 1,
        batching: BatchPolicy | None = None,
        tflite: TflitePolicy | None = None,
        on_load: Callable[[str, int, Path, float, bool, bool], None] = lambda *_: None,
        on_warmup: WarmupObserver = lambda *_: None,
        on_change: Callable[[], None] = lambda: None,
        on_batch: Callable[[str, int], None] = lambda *_: None,
        allow_unavailable_labels: bool = False,
        load_retries: int = 0,
        load_retry_interval_s: float = 0.0,
    ) -> None:
        """`pool` runs the loaded versions' model calls; `warm_up_iterations`: how many times each of
        a version's warm-up records is replayed before it serves (0: none); `on_load(model, version,
        path, seconds, ok, saved_model)` hears of every load (metrics; `saved_model`: its SavedModel was
        read, not its model.tflite); `on_warmup` of every warm-up (serving/warmup.py); `on_change()` of
        every version that starts or stops answering, or fails for good (the health service, and a
        reload call waiting for its new models); `on_batch(model, size)` of every batch."""
        self._lock = threading.RLock()
        self._sync_lock = threading.Lock()
        self._models: dict[str, ModelEntry] = {}
        self._gone: dict[str, dict[int, VersionRecord]] = {}  # versions of models the config left
        self._pool, self._batching, self._tflite = pool, batching, tflite
        self._warm_up_iterations = warm_up_iterations
        self._on_load, self._on_change, self._on_batch = on_load, on_change, on_batch
        self._on_warmup = on_warmup
        self._stop = threading.Event()
        self._wake = threading.Event()  # a poll is due sooner than the poller thought (a retry)
        self._load_retries, self._load_retry_interval_s = load_retries, load_retry_interval_s
        self._poller: threading.Thread | None = None
        self.reload(config, allow_unavailable_labels)

    # ---- configuration and polling -------------------------------------------------------------

    def reload(
        self, config: model_server_config_pb2.ModelServerConfig, allow_unavailable_labels: bool = False
    ) -> list[ModelEntry]:
        """Adopt a new ModelServerConfig: new models are loaded, removed ones unloaded. Returns the
        entries of the models whose names the previous config lacked, the ones a reload call waits for.

        A model that keeps its name and gets a new base path keeps its versions too: TF Serving knows a
        version by name and number alone (file_system_storage_path_source.cc:75-83), so a number that
        the new path holds as well serves on, unreloaded (aspired_versions_manager.cc:296-326), and the
        others are unloaded by the availability-preserving rule, once one from the new path serves.

        As TF Serving, a label may name only an AVAILABLE version (so that moving a label never sends
        its traffic to a version still loading); `allow_unavailable_labels` lets a label that is new,
        or that keeps its version, name any version. A config that breaks the rule is refused whole."""
        configs = list(config.model_config_list.config)
        # Not behind a poll's loads (the sync lock): as TF Serving's UpdateConfig, a reload changes what
        # is aspired at once, and loads are the poller's (file_system_storage_path_source.cc:377-398).
        with self._lock:
            self._check_labels(configs, allow_unavailable_labels)
            removed = [m for name, m in self._models.items() if name not in {c.name for c in configs}]
            models, added = {}, []
            for model_config in configs:
                entry = self._models.get(model_config.name)
                if entry is None:
                    added.append(model_config.name)
                    entry = ModelEntry(model_config)
                elif entry.config.base_path != model_config.base_path:
                    entry.base_missing = False  # the new path is warned about if it is missing
                entry.config = model_config
                models[model_config.name] = entry
            self._models = models
            for entry in removed:
                self._remember(entry)
        for entry in removed:
            for record in [r for r in entry.records.values() if r.state == AVAILABLE]:
                self._unload(entry, record)
        return [models[name] for name in added]

    def _remember(self, entry: ModelEntry) -> None:
        """Keep the versions of a model leaving the config in its status, as TF Serving's state monitor
        keeps every version's last state (core/servable_state_monitor.cc:282): those serving go to END
        as they unload, a load waiting for its retry ends with its error."""
        for record in list(entry.records.values()):
            if record.last_error is not None:
                code, message = record.last_error
                entry.settle(VersionRecord(record.version, END, code, message))
        self._gone[entry.name] = {**self._gone.get(entry.name, {}), **entry.records}

    def _check_labels(
        self, configs: list[model_server_config_pb2.ModelConfig], allow_unavailable: bool
    ) -> None:
        for model_config in configs:
            entry = self._models.get(model_config.name)
            available = entry.available() if entry is not None else []
            current = dict(entry.config.version_labels) if entry is not None else {}
            for label, version in model_config.version_labels.items():
                if version in available or (allow_unavailable and current.get(label, version) == version):
                    continue
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Request to assign label to version {version} of model {model_config.name}, "
                    "which is not currently available for inference",
                )

    def poll(self) -> None:
        """Look at every base path once and load, retire or unload versions to match it.

        Polls (the poller's, and a reload's) run one at a time; one model's trouble (an unreadable
        directory, say) is logged and leaves the others alone."""
        with self._sync_lock:
            with self._lock:
                entries = list(self._models.values())
            for entry in entries:
                try:
                    self._sync(entry)
                except Exception:
                    log.exception("polling model %s failed", entry.name)
                self._postpone_missed_retries(entry)

    def _postpone_missed_retries(self, entry: ModelEntry) -> None:
        """A retry that was due but not made (the base path missing, the poll failing) waits another
        interval rather than asking for a poll at once, again and again."""
        now = time.monotonic()
        with self._lock:
            for record in entry.records.values():
                if record.retry_at is not None and record.retry_at <= now:
                    record.retry_at = now + self._load_retry_interval_s

    def poll_soon(self) -> None:
        """Have the poller poll now, or as soon as the poll under way ends (after a reload: ours, where
        TF Serving waits for its next period)."""
        self._wake.set()

    def start_polling(self, every_s: float, first_done: Callable[[], object] = lambda: None) -> None:
        """Poll now and then every `every_s` seconds, in the background (TF Serving: 0 polls once, < 0
        never), calling `first_done` once the first poll's loads have ended; and whenever a failed load
        is due to be retried (a load a reload asked for, when the file system is never polled)."""

        def loop() -> None:
            if every_s >= 0:
                self.poll()
            first_done()
            while True:
                self._wake.wait(self._next_poll_in(every_s))
                self._wake.clear()
                if self._stop.is_set():
                    return
                self.poll()

        self._poller = threading.Thread(target=loop, name="model-poller", daemon=True)
        self._poller.start()

    def _next_poll_in(self, every_s: float) -> float | None:
        """Seconds to the next poll: the polling period or the first retry due, whichever is sooner."""
        with self._lock:
            due = [
                r.retry_at
                for m in self._models.values()
                for r in m.records.values()
                if r.retry_at is not None
            ]
        waits = [every_s] if every_s > 0 else []
        waits += [max(0.0, min(due) - time.monotonic())] if due else []
        return min(waits) if waits else None

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._poller is not None:
            self._poller.join(timeout=5)

    def _sync(self, entry: ModelEntry) -> None:
        present = present_versions(Path(entry.config.base_path), entry.config.model_version_policy)
        if present is None:  # as TF Serving: a missing base path changes nothing (a mount gone away?)
            if not entry.base_missing:
                log.warning(
                    "base path %s of model %s not found; serving it once it appears (a path inside a "
                    "container? --base_path_map maps it to this machine's)",
                    entry.config.base_path,
                    entry.name,
                )
            entry.base_missing = True
            return
        entry.base_missing = False
        aspired = aspired_versions(entry.config.model_version_policy, list(present))
        with self._lock:
            # A failed load waiting for its retry is given up once its version is no longer aspired.
            given_up = [
                (v, r.last_error) for v, r in entry.records.items() if r.last_error and v not in aspired
            ]
            for version, (code, message) in given_up:
                entry.settle(VersionRecord(version, END, code, message))
            # A failed version is tried afresh only once it has left the aspired versions (its
            # directory gone, say) and come back: while it stays aspired, it stays failed. Its END
            # and error stay in the status meanwhile, as TF Serving's state monitor keeps them
            # (core/servable_state_monitor.cc:282).
            for version, record in entry.records.items():
                if record.state == END and record.error_code != grpc.StatusCode.OK and version not in aspired:
                    record.flushed = True
            # Load what is aspired and not yet there, and retry a failed load that is due.
            now = time.monotonic()

            def due(record: VersionRecord | None) -> bool:
                return (
                    record is None
                    or (record.state == END and (record.error_code == grpc.StatusCode.OK or record.flushed))
                    or (record.retry_at is not None and record.retry_at <= now)
                )

            # The newest first, as TF Serving's policy picks the highest new version to load
            # (availability_preserving_policy.cc:77-84): it serves soonest.
            to_load = [v for v in reversed(aspired) if due(entry.records.get(v))]
            for version in to_load:
                previous = entry.records.get(version)
                failed = previous.failed_loads if previous is not None and previous.state == LOADING else 0
                entry.records[version] = VersionRecord(version, LOADING, failed_loads=failed)
        if given_up:
            self._on_change()
        for version in to_load:
            self._load(entry, version, present[version])
        with self._lock:
            retire = [entry.records[v] for v in self._to_unload(entry, aspired)]
        for record in retire:
            self._unload(entry, record)

    @staticmethod
    def _to_unload(entry: ModelEntry, aspired: list[int]) -> list[int]:
        """The versions serving that are no longer aspired and may go, by TF Serving's
        AvailabilityPreservingPolicy (core/availability_preserving_policy.cc:47-75): all of them once
        an aspired version serves (or none is aspired); until then all but the newest, which serves
        on (its directory gone or not) while the new one loads, retries, or has failed."""
        unaspired = [v for v in entry.available() if v not in aspired]
        if not aspired or any(v in aspired for v in entry.available()):
            return unaspired
        return unaspired[:-1]

    def _load(self, entry: ModelEntry, version: int, path: Path) -> None:
        """Load a version once. A failure is retried as TF Serving's loader harness retries it: up to
        `load_retries` more times, `load_retry_interval_s` apart, by a later poll (so no lock is held
        while waiting), while the version is still aspired; a version still being copied into place
        thus loads once the copy is complete. Then it is END with its error."""
        started = time.monotonic()
        saved_model = not runs_tflite(path, self._tflite)
        servable: Servable | None = None
        try:
            servable = Servable(
                entry.name,
                version,
                path,
                self._pool,
                self._batching,
                lambda size: self._on_batch(entry.name, size),
                self._tflite,
            )
            warmed = 0
            if self._warm_up_iterations:
                warmed = servable.warm_up(self._warm_up_iterations, self._on_warmup)
        except Exception as err:  # any failure to load is reported in the status, not raised
            if servable is not None:  # loaded, then its warm-up failed: its threads end here
                servable.close()
            message = f"Failed to load {entry.name} version {version} from {path}: {err}"
            code = err.code if isinstance(err, ServingError) else grpc.StatusCode.UNKNOWN
            self._on_load(entry.name, version, path, time.monotonic() - started, False, saved_model)
            with self._lock:
                failed = entry.records[version].failed_loads + 1
                if failed <= self._load_retries:
                    log.warning("%s; retrying in %gs", message, self._load_retry_interval_s)
                    entry.records[version] = VersionRecord(
                        version,
                        LOADING,
                        failed_loads=failed,
                        retry_at=time.monotonic() + self._load_retry_interval_s,
                        last_error=(code, message),
                    )
                    self._wake.set()
                    return
                log.error("%s", message)
                entry.settle(VersionRecord(version, END, code, message))
                self._note_if_removed(entry, version)
            self._on_change()
            return
        seconds = time.monotonic() - started
        with self._lock:
            entry.settle(VersionRecord(version, AVAILABLE, servable=servable))
            removed = self._note_if_removed(entry, version)
        self._on_load(entry.name, version, path, seconds, True, saved_model)
        if removed:  # a reload took the model out while this version loaded: it never serves
            self._unload(entry, entry.records[version])
            return
        self._on_change()
        settle_heap()
        log.info("loaded %s version %d in %.2fs (%d warm-up requests)", entry.name, version, seconds, warmed)

    def _note_if_removed(self, entry: ModelEntry, version: int) -> bool:
        """Whether a reload has taken the entry's model out of the config (while one of its versions
        loaded); if so, that version's record joins the removed model's status. Called with the lock."""
        if self._models.get(entry.name) is entry:
            return False
        self._gone.setdefault(entry.name, {})[version] = entry.records[version]
        return True

    def _unload(self, entry: ModelEntry, record: VersionRecord) -> None:
        with self._lock:
            record.state = UNLOADING  # from now on no new request is routed here
            servable = record.servable
        self._on_change()
        if servable is not None:
            if not servable.requests.wait_idle(UNLOAD_GRACE_S):
                log.warning("unloading %s version %d with requests still running", entry.name, record.version)
            servable.close()
        with self._lock:
            record.state, record.servable = END, None
        settle_heap()
        log.info("unloaded %s version %d", entry.name, record.version)

    # ---- requests ------------------------------------------------------------------------------

    @contextmanager
    def serving(self, name: str, version: int | None = None, label: str | None = None) -> Iterator[Servable]:
        """The servable a request names, held so that no unload pulls it away mid-request."""
        with self._lock:
            servable = self._resolve(name, version, label)
            servable.requests.enter()
        try:
            yield servable
        finally:
            servable.requests.leave()

    def _entry(self, name: str, version: int | None = None) -> ModelEntry:
        if not name:
            raise invalid_argument("ModelSpec has no name specified.")
        entry = self._models.get(name)
        if entry is None:
            asked = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise not_found(f"Servable not found for request: {asked}")
        return entry

    def _resolve(self, name: str, version: int | None, label: str | None) -> Servable:
        """As ServerCore resolves a ModelSpec (server_core.cc:847-891): a label first, whether or not
        the model is served; then the version, named in the refusal as it was asked for."""
        if label is not None and name:
            labelled = self._models.get(name)
            if labelled is None or label not in labelled.config.version_labels:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            version = labelled.config.version_labels[label]
        entry = self._entry(name, version)
        if version is None:
            available = entry.available()
            if not available:
                raise not_found(f"Servable not found for request: Latest({name})")
            version = available[-1]
        record = entry.records.get(version)
        if record is None or record.state != AVAILABLE or record.servable is None:
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return record.servable

    def statuses(self, name: str, version: int | None = None) -> list[VersionRecord]:
        """What GetModelStatus reports: every version seen, newest first, or the one asked for; those
        of a model the config no longer names too, as TF Serving reports them."""
        with self._lock:
            entry = self._models.get(name)
            records = {**self._gone.get(name, {}), **(entry.records if entry is not None else {})}
            if version is None:
                if not records:
                    raise not_found(f"Could not find any versions of model {name}")
                return [records[v] for v in sorted(records, reverse=True)]
            if version not in records:
                raise not_found(f"Could not find version {version} of model {name}")
            return [records[version]]

    def wait_idle(self, timeout: float) -> bool:
        """Wait for the requests in flight on every version (at shutdown)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            servables = [r.servable for m in self._models.values() for r in m.records.values() if r.servable]
        return all(s.requests.wait_idle(max(0.0, deadline - time.monotonic())) for s in servables)

    def holds(self, entry: ModelEntry) -> bool:
        """The config in force still has this entry (its model not removed)."""
        with self._lock:
            return self._models.get(entry.name) is entry

    def serves(self, name: str) -> bool:
        """The config in force names this model."""
        with self._lock:
            return name in self._models

    def all_available(self) -> bool:
        """Every model has a version that answers."""
        with self._lock:
            return all(entry.available() for entry in self._models.values())
