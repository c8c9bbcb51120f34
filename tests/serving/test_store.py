"""serving/store.py in process: the ModelStore's version lifecycle against a fake loader.

The store has no loader parameter: it builds `serving.store.Servable(name, version, path, batching,
on_batch)` itself. So each test monkeypatches that one name with a FakeLoader, whose servables count
requests and closes like the real one without TensorFlow, and whose loads can be held at a gate or made
to fail per version. Version directories are empty numbered directories under tmp_path.

`settle_heap` (a gc.collect + gc.freeze after every load and unload) is patched out as well: it is heap
housekeeping, not lifecycle logic, and freezing the test process's heap would leak into other tests.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from tensorflow_serving.config import model_server_config_pb2

import serving.store as store_module
from serving.errors import ServingError
from serving.in_flight import InFlight
from serving.model_pool import ModelPool
from serving.store import AVAILABLE, END, LOADING, UNLOADING, ModelEntry, ModelStore
from tests.conftest import wait_for

pytestmark = pytest.mark.fast

WAIT_S = 10.0


class FakeServable:
    """What the store needs of a Servable: its requests in flight, close, warm-up; nothing loaded."""

    def __init__(self, name: str, version: int, path: Path) -> None:
        self.name, self.version, self.path = name, version, path
        self.closed = False
        self.warmed = False
        self.requests = GuardedInFlight(self)

    def close(self) -> None:
        assert self.requests.wait_idle(0), "closed with requests still running"
        self.closed = True

    def warm_up(self, iterations: int, observe: object) -> int:
        self.warmed = True
        return 0


class GuardedInFlight(InFlight):
    """Fails the test when the store routes a request to a servable it has closed."""

    def __init__(self, servable: FakeServable) -> None:
        super().__init__()
        self.servable = servable

    def enter(self) -> None:
        assert not self.servable.closed, "a request was routed to a closed servable"
        super().enter()


class FakeLoader:
    """Stands in for the Servable class: records every load; `fail[v]` makes version v's load raise,
    `gate(v)` holds version v's load until the test opens it."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, int]] = []
        self.servables: dict[tuple[str, int], FakeServable] = {}
        self.fail: dict[int, Exception] = {}
        self._gates: dict[int, threading.Event] = {}
        self._entered: dict[int, threading.Event] = {}
        self._lock = threading.Lock()

    def gate(self, version: int) -> threading.Event:
        """Hold version's load until the returned event is set."""
        self._entered[version] = threading.Event()
        self._gates[version] = threading.Event()
        return self._gates[version]

    def is_loading(self, version: int) -> bool:
        return self._entered[version].is_set()

    def __call__(
        self,
        name: str,
        version: int,
        path: Path,
        pool: object = None,
        batching: object = None,
        on_batch: object = None,
        tflite: object = None,
    ) -> FakeServable:
        with self._lock:
            self.attempts.append((name, version))
        if not path.is_dir():  # the real Servable reads path/saved_model.pb
            raise FileNotFoundError(f"{path} is not a directory")
        if version in self._gates:
            self._entered[version].set()
            assert self._gates[version].wait(WAIT_S), f"the test never opened version {version}'s gate"
        if version in self.fail:
            raise self.fail[version]
        servable = FakeServable(name, version, path)
        with self._lock:
            self.servables[(name, version)] = servable
        return servable

    def tries(self, version: int, name: str = "m") -> int:
        return self.attempts.count((name, version))


@pytest.fixture
def loader(monkeypatch: pytest.MonkeyPatch) -> FakeLoader:
    fake = FakeLoader()
    monkeypatch.setattr(store_module, "Servable", fake)
    monkeypatch.setattr(store_module, "settle_heap", lambda: None)
    return fake


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "m"
    path.mkdir()
    return path


def publish(base: Path, *versions: int) -> None:
    for version in versions:
        (base / str(version)).mkdir()


def config(
    *models: tuple[str, Path],
    policy: str = "latest",
    arg: int | list[int] = 1,
    labels: dict[str, int] | None = None,
) -> model_server_config_pb2.ModelServerConfig:
    """A ModelServerConfig of these (name, base path) models, all with one version policy and labels."""
    made = model_server_config_pb2.ModelServerConfig()
    for name, path in models:
        model = made.model_config_list.config.add(name=name, base_path=str(path), model_platform="tensorflow")
        chosen = model.model_version_policy
        if policy == "latest":
            chosen.latest.num_versions = arg
        elif policy == "all":
            chosen.all.SetInParent()
        elif policy == "specific":
            chosen.specific.versions.extend(arg)
        for label, version in (labels or {}).items():
            model.version_labels[label] = version
    return made


def states(store: ModelStore, name: str = "m") -> dict[int, str]:
    try:
        return {r.version: r.state for r in store.statuses(name)}
    except ServingError:
        return {}


def answering(store: ModelStore, name: str = "m", **spec: Any) -> int:
    with store.serving(name, **spec) as servable:
        return servable.version


def refused(call: Callable[[], object], code: grpc.StatusCode) -> str:
    with pytest.raises(ServingError) as raised:
        call()
    assert raised.value.code == code, raised.value.message
    return raised.value.message


@pytest.fixture
def stores() -> Iterator[list[ModelStore]]:
    """Stores a test made, stopped afterwards (their pollers are daemon threads)."""
    made: list[ModelStore] = []
    yield made
    for store in made:
        store.stop()


MakeStore = Callable[..., ModelStore]


@pytest.fixture
def make_store(loader: FakeLoader, stores: list[ModelStore]) -> MakeStore:
    def make(models: model_server_config_pb2.ModelServerConfig, **kwargs: Any) -> ModelStore:
        store = ModelStore(models, ModelPool(threads=1, max_waiting=8), **kwargs)
        stores.append(store)
        return store

    return make


def background_poll(store: ModelStore) -> threading.Thread:
    thread = threading.Thread(target=store.poll, daemon=True)
    thread.start()
    return thread


# ---- what is loaded -----------------------------------------------------------------------------


def test_the_default_policy_serves_only_the_newest_version(
    base: Path, loader: FakeLoader, make_store: MakeStore
) -> None:
    """Latest(1) is TF Serving's default; a child whose name is not an int64 is not a version."""
    publish(base, 1, 2, 10)
    for other in ("0", "notes", ".staging-11", "-3", "1e3", "99999999999999999999"):
        (base / other).mkdir()
    store = make_store(config(("m", base)))
    store.poll()

    assert states(store) == {10: AVAILABLE}
    assert loader.attempts == [("m", 10)]
    assert answering(store) == 10
    assert loader.servables[("m", 10)].warmed


def test_a_version_whose_files_go_serves_on_until_an_aspired_one_does(
    base: Path, loader: FakeLoader, make_store: MakeStore
) -> None:
    """TF Serving's AvailabilityPreservingPolicy: a version no longer aspired is unloaded only once an
    aspired one serves (or none is aspired); until then the newest of them serves on from memory."""
    publish(base, 1, 2, 3)
    loader.fail[3] = RuntimeError("a bad push")
    store = make_store(config(("m", base)), load_retries=0)
    store.poll()
    assert states(store) == {3: END}  # 1 and 2 were never aspired, so never loaded
    shutil.rmtree(base / "3")
    store.poll()
    assert states(store) == {3: END, 2: AVAILABLE}  # a failed version's END stays in the status
    publish(base, 4)
    loader.fail[4] = RuntimeError("another bad push")
    shutil.rmtree(base / "2")
    store.poll()
    assert states(store) == {4: END, 3: END, 2: AVAILABLE} and answering(store) == 2
    shutil.rmtree(base / "4")
    store.poll()
    assert states(store) == {4: END, 3: END, 2: END, 1: AVAILABLE} and answering(store) == 1


def test_a_file_named_as_a_version_is_one_that_fails_to_load(
    base: Path, loader: FakeLoader, make_store: MakeStore
) -> None:
    """TF Serving lists every child of the base path, files too: the newest is then a version that
    cannot load, and nothing older is aspired in its place."""
    publish(base, 10)
    (base / "12").write_text("a file, not a version directory")
    store = make_store(config(("m", base)))
    store.poll()
    assert states(store) == {12: END}


@pytest.mark.parametrize(
    ("policy", "arg", "expected"),
    [
        ("latest", 2, {2, 3}),
        ("all", 0, {1, 2, 3}),
        ("specific", [1, 3], {1, 3}),
        ("specific", [3, 7], {3}),
    ],
    ids=["latest-2", "all", "specific", "specific-partly-absent"],
)
def test_the_version_policy_chooses_what_is_loaded(
    base: Path,
    loader: FakeLoader,
    make_store: MakeStore,
    policy: str,
    arg: int | list[int],
    expected: set[int],
) -> None:
    publish(base, 1, 2, 3)
    store = make_store(config(("m", base), policy=policy, arg=arg))
    store.poll()

    assert states(store) == dict.fromkeys(expected, AVAILABLE)
    assert [v for _, v in loader.attempts] == sorted(expected, reverse=True)  # the newest serves first
    assert answering(store) == max(expected)  # no version named: the newest AVAILABLE one
    for version in expected:
        assert answering(store, version=version) == version


def test_a_specific_policy_with_none_present_loads_nothing(base: Path, make_store: MakeStore) -> None:
    publish(base, 1)
    store = make_store(config(("m", base), policy="specific", arg=[5]))
    store.poll()
    assert refused(lambda: store.statuses("m"), grpc.StatusCode.NOT_FOUND) == (
        "Could not find any versions of model m"
    )
    assert not store.all_available()


def test_narrowing_the_policy_retires_versions_no_longer_aspired(
    base: Path, loader: FakeLoader, make_store: MakeStore
) -> None:
    publish(base, 1, 2)
    store = make_store(config(("m", base), policy="all"))
    store.poll()
    assert states(store) == {1: AVAILABLE, 2: AVAILABLE}

    store.reload(config(("m", base)))
    store.poll()
    assert states(store) == {2: AVAILABLE, 1: END}
    assert loader.servables[("m", 1)].closed
    assert loader.tries(2) == 1  # kept, not loaded again


def test_warm_up_can_be_switched_off(base: Path, loader: FakeLoader, make_store: MakeStore) -> None:
    publish(base, 1)
    store = make_store(config(("m", base)), warm_up_iterations=0)
    store.poll()
    assert not loader.servables[("m", 1)].warmed


# ---- routing during a rollover ------------------------------------------------------------------


def serving_1_while_2_loads(
    base: Path, loader: FakeLoader, make_store: MakeStore
) -> tuple[ModelStore, threading.Event, threading.Thread]:
    """A store of model m serving version 1, with version 2 held loading by a poll in the background:
    the store, the gate that lets 2's load finish, and the poll."""
    publish(base, 1)
    store = make_store(config(("m", base)))
    store.poll()
    publish(base, 2)
    gate = loader.gate(2)
    poll = background_poll(store)
    wait_for(lambda: loader.is_loading(2), WAIT_S, "version 2 to start loading")
    return store, gate, poll


def test_a_version_still_loading_gets_no_requests(
    base: Path, loader: FakeLoader, make_store: MakeStore
) -> None:
    """Until version 2 is AVAILABLE every request goes to version 1, and naming 2 is NOT_FOUND; once it
    is, requests go to 2 and 1 is unloaded."""
    store, gate, poll = serving_1_while_2_loads(base, loader, make_store)
    assert states(store) == {1: AVAILABLE, 2: LOADING}
    assert answering(store) == 1
    assert refused(lambda: answering(store, version=2), grpc.StatusCode.NOT_FOUND) == (
        "Servable not found for request: Specific(m, 2)"
    )

    gate.set()
    poll.join(WAIT_S)
    assert not poll.is_alive()
    assert states(store) == {2: AVAILABLE, 1: END}
    assert answering(store) == 2
    assert loader.servables[("m", 1)].closed


def test_a_superseded_version_is_unloaded_only_after_its_requests_finish(
    base: Path, loader: FakeLoader, make_store: MakeStore
) -> None:
    """Availability-preserving: 1 stops taking requests the moment 2 is AVAILABLE (UNLOADING), but is
    closed only once the request it is running has finished."""
    publish(base, 1)
    store = make_store(config(("m", base)))
    store.poll()
    old = loader.servables[("m", 1)]

    with store.serving("m") as held:
        assert held is old
        publish(base, 2)
        poll = background_poll(store)
        wait_for(lambda: states(store) == {2: AVAILABLE, 1: UNLOADING}, WAIT_S, "version 1 to be unloading")
        assert answering(store) == 2  # new requests already go to 2
        assert refused(lambda: answering(store, version=1), grpc.StatusCode.NOT_FOUND) == (
            "Servable not found for request: Specific(m, 1)"
        )
        assert not old.closed and poll.is_alive()

    poll.join(WAIT_S)
    assert not poll.is_alive()
    assert old.closed
    assert states(store) == {2: AVAILABLE, 1: END}


def test_a_deleted_version_is_unloaded(base: Path, loader: FakeLoader, make_store: MakeStore) -> None:
    publish(base, 1, 2)
    store = make_store(config(("m", base), policy="all"))
    store.poll()
    shutil.rmtree(base / "1")
    store.poll()

    assert states(store) == {2: AVAILABLE, 1: END}
    assert loader.servables[("m", 1)].closed
    assert answering(store) == 2


def test_deleting_the_newest_version_brings_back_the_one_before(
    base: Path, loader: FakeLoader, make_store: MakeStore
) -> None:
    """Under Latest(1) a rollback is deleting the bad version: the previous one is loaded again."""
    publish(base, 1)
    store = make_store(config(("m", base)))
    store.poll()
    publish(base, 2)
    store.poll()
    assert states(store) == {2: AVAILABLE, 1: END}

    shutil.rmtree(base / "2")
    store.poll()
    assert states(store) == {1: AVAILABLE, 2: END}
    assert answering(store) == 1
    assert loader.tries(1) == 2
    assert loader.servables[("m", 2)].closed


# ---- failed loads -------------------------------------------------------------------------------


def test_a_version_that_fails_to_load_is_end_with_its_error_and_the_older_keeps_serving(
    base: Path, loader: FakeLoader, make_store: MakeStore
) -> None:
    heard: list[tuple[str, int, bool]] = []
    publish(base, 1)
    store = make_store(
        config(("m", base)), on_load=lambda m, v, _path, _s, ok, _saved: heard.append((m, v, ok))
    )
    store.poll()
    publish(base, 2)
    loader.fail[2] = ValueError("saved_model.pb is truncated")
    store.poll()

    (failed,) = store.statuses("m", 2)
    assert failed.state == END
    assert failed.error_code == grpc.StatusCode.UNKNOWN
    assert (
        failed.error_message == f"Failed to load m version 2 from {base / '2'}: saved_model.pb is truncated"
    )
    assert states(store) == {2: END, 1: AVAILABLE}
    assert answering(store) == 1
    assert not loader.servables[("m", 1)].closed
    assert heard == [("m", 1, True), ("m", 2, False)]

    store.poll()
    assert loader.tries(2) == 1, "a failed version is not retried while its directory stays"


def test_a_failed_version_is_tried_again_once_its_directory_is_replaced(
    base: Path, loader: FakeLoader, make_store: MakeStore
) -> None:
    publish(base, 1, 2)
    loader.fail[2] = ValueError("broken")
    store = make_store(config(("m", base), policy="all"))
    store.poll()
    assert states(store) == {1: AVAILABLE, 2: END}

    shutil.rmtree(base / "2")
    store.poll()
    assert states(store) == {1: AVAILABLE, 2: END}  # the failure stays in the status, as TF Serving's
    del loader.fail[2]
    publish(base, 2)
    store.poll()
    assert states(store) == {1: AVAILABLE, 2: AVAILABLE}
    assert loader.tries(2) == 2


def test_a_failed_load_is_retried_when_due_and_given_up_after_the_last_retry(
    base: Path, loader: FakeLoader, make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TF Serving's retries: LOADING between attempts, each after the interval (the poll that comes
    earlier does not try), END with the last error once they are spent."""
    clock = [1000.0]
    monkeypatch.setattr(store_module.time, "monotonic", lambda: clock[0])
    publish(base, 1)
    loader.fail[1] = ValueError("half copied")
    store = make_store(config(("m", base)), load_retries=2, load_retry_interval_s=60.0)
    store.poll()
    assert states(store) == {1: LOADING} and loader.tries(1) == 1
    clock[0] += 30
    store.poll()
    assert loader.tries(1) == 1, "not before the interval"
    clock[0] += 30
    store.poll()
    assert states(store) == {1: LOADING} and loader.tries(1) == 2
    clock[0] += 60
    store.poll()
    (record,) = store.statuses("m")
    assert (record.state, loader.tries(1)) == (END, 3)
    assert record.error_message.endswith("half copied")
    clock[0] += 600
    store.poll()
    assert loader.tries(1) == 3, "spent: not tried again while its directory stays"


def test_a_retry_loads_a_version_once_it_is_complete_or_ends_when_it_is_gone(
    base: Path, loader: FakeLoader, make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(store_module.time, "monotonic", lambda: clock[0])
    publish(base, 1, 2)
    loader.fail.update({1: ValueError("half copied"), 2: ValueError("half copied")})
    store = make_store(config(("m", base), policy="all"), load_retries=5, load_retry_interval_s=1.0)
    store.poll()
    assert states(store) == {1: LOADING, 2: LOADING}
    del loader.fail[1]  # the copy completed
    shutil.rmtree(base / "2")  # this one was taken away
    clock[0] += 1
    store.poll()
    assert states(store) == {1: AVAILABLE, 2: END} and loader.tries(2) == 1  # 2 given up with its directory


def test_a_failed_version_that_leaves_the_policy_and_comes_back_is_loaded_afresh(
    base: Path, loader: FakeLoader, make_store: MakeStore
) -> None:
    """As TF Serving flushes a failed version once it is no longer aspired: v2 fails, v3 supersedes it,
    v3 is deleted, and v2, aspired again, is loaded anew (its files meanwhile mended)."""
    publish(base, 2)
    loader.fail[2] = ValueError("broken")
    store = make_store(config(("m", base)))
    store.poll()
    assert states(store) == {2: END}
    publish(base, 3)
    store.poll()
    assert states(store) == {3: AVAILABLE, 2: END}
    del loader.fail[2]
    shutil.rmtree(base / "3")
    store.poll()
    assert states(store)[2] == AVAILABLE and loader.tries(2) == 2


def test_a_retry_missed_for_a_missing_base_path_waits_another_interval(
    tmp_path: Path, loader: FakeLoader, make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The poller sleeps until the next retry is due: one that cannot be made (the base path gone) is
    put off by an interval, not left due, which would have the poller spin."""
    clock = [1000.0]
    monkeypatch.setattr(store_module.time, "monotonic", lambda: clock[0])
    base = tmp_path / "m"
    (base / "1").mkdir(parents=True)
    loader.fail[1] = ValueError("half copied")
    store = make_store(config(("m", base)), load_retries=3, load_retry_interval_s=5.0)
    store.poll()
    shutil.rmtree(base)
    clock[0] += 5
    store.poll()
    assert store._next_poll_in(0) == pytest.approx(5.0)
    assert loader.tries(1) == 1 and states(store) == {1: LOADING}


def test_a_load_failing_with_a_status_keeps_its_code(
    base: Path, loader: FakeLoader, make_store: MakeStore
) -> None:
    publish(base, 1)
    loader.fail[1] = ServingError(grpc.StatusCode.FAILED_PRECONDITION, "no MetaGraph tagged 'serve'")
    store = make_store(config(("m", base)))
    store.poll()
    (record,) = store.statuses("m")
    assert (record.state, record.error_code) == (END, grpc.StatusCode.FAILED_PRECONDITION)
    assert refused(lambda: answering(store), grpc.StatusCode.NOT_FOUND) == (
        "Servable not found for request: Latest(m)"
    )


def test_a_version_directory_with_leading_zeros_is_loaded_from_that_directory(
    base: Path, loader: FakeLoader, make_store: MakeStore
) -> None:
    """TF Serving parses `007` as version 7 and loads it from `007`, the directory as it is named."""
    (base / "007").mkdir()
    store = make_store(config(("m", base)))
    store.poll()
    assert states(store) == {7: AVAILABLE}
    assert loader.servables[("m", 7)].path == base / "007"


def test_of_two_directories_for_one_version_the_name_sorting_last_is_loaded(
    base: Path, loader: FakeLoader, make_store: MakeStore
) -> None:
    """As TF Serving's IndexChildrenByVersion: `7` wins over `07` and `007`, whatever the listing order."""
    for name in ("007", "7", "07"):
        (base / name).mkdir()
    store = make_store(config(("m", base)))
    store.poll()
    assert states(store) == {7: AVAILABLE}
    assert loader.tries(7) == 1
    assert loader.servables[("m", 7)].path == base / "7"


# ---- names and labels ---------------------------------------------------------------------------


def test_labels_route_to_their_versions_and_may_move_only_to_available_ones(
    base: Path, make_store: MakeStore
) -> None:
    publish(base, 1, 2)
    store = make_store(config(("m", base), policy="all"))
    store.poll()
    store.reload(config(("m", base), policy="all", labels={"stable": 1, "canary": 2}))

    assert answering(store, label="stable") == 1
    assert answering(store, label="canary") == 2
    assert refused(lambda: answering(store, label="beta"), grpc.StatusCode.INVALID_ARGUMENT) == (
        "Unrecognized servable version label: beta"
    )

    moved = config(("m", base), policy="all", labels={"stable": 1, "canary": 3})
    assert refused(lambda: store.reload(moved), grpc.StatusCode.FAILED_PRECONDITION) == (
        "Request to assign label to version 3 of model m, which is not currently available for inference"
    )
    assert answering(store, label="canary") == 2  # the refused config changed nothing


def test_labels_for_versions_not_yet_loaded_need_allow_unavailable(base: Path, make_store: MakeStore) -> None:
    """At start-up nothing is loaded, so a config with labels is refused unless
    --allow_version_labels_for_unavailable_models, as in TF Serving."""
    publish(base, 1, 2)
    labelled = config(("m", base), policy="all", labels={"stable": 1})
    with pytest.raises(ServingError) as raised:
        make_store(labelled)
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION

    store = make_store(labelled, allow_unavailable_labels=True)
    assert refused(lambda: answering(store, label="stable"), grpc.StatusCode.NOT_FOUND) == (
        "Servable not found for request: Specific(m, 1)"
    )
    store.poll()
    assert answering(store, label="stable") == 1


def test_unknown_models_versions_and_empty_names(base: Path, make_store: MakeStore) -> None:
    publish(base, 1)
    store = make_store(config(("m", base)))
    store.poll()
    assert refused(lambda: answering(store, "other"), grpc.StatusCode.NOT_FOUND) == (
        "Servable not found for request: Latest(other)"
    )
    assert refused(lambda: answering(store, ""), grpc.StatusCode.INVALID_ARGUMENT) == (
        "ModelSpec has no name specified."
    )
    assert refused(lambda: store.statuses("m", 7), grpc.StatusCode.NOT_FOUND) == (
        "Could not find version 7 of model m"
    )
    assert refused(lambda: store.statuses("other"), grpc.StatusCode.NOT_FOUND) == (
        "Could not find any versions of model other"
    )


# ---- base paths, config reloads, the poller ------------------------------------------------------


def test_a_missing_base_path_changes_nothing_until_it_appears(tmp_path: Path, make_store: MakeStore) -> None:
    base = tmp_path / "later"
    store = make_store(config(("m", base)))
    store.poll()
    assert states(store) == {} and not store.all_available()

    base.mkdir()
    publish(base, 3)
    store.poll()
    assert states(store) == {3: AVAILABLE} and store.all_available()


def test_a_missing_base_path_keeps_the_versions_already_serving(base: Path, make_store: MakeStore) -> None:
    """As TF Serving: a base path that vanishes (an unmounted volume?) unloads nothing."""
    publish(base, 1)
    store = make_store(config(("m", base)))
    store.poll()
    shutil.rmtree(base)
    store.poll()
    assert states(store) == {1: AVAILABLE}
    assert answering(store) == 1


def test_a_model_dropped_from_the_config_is_unloaded(
    tmp_path: Path, loader: FakeLoader, make_store: MakeStore
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    publish(first, 1)
    publish(second, 4)
    changes: list[None] = []
    store = make_store(config(("a", first), ("b", second)), on_change=lambda: changes.append(None))
    store.poll()
    assert (answering(store, "a"), answering(store, "b")) == (1, 4)
    loaded_changes = len(changes)

    store.reload(config(("a", first)))
    assert loader.servables[("b", 4)].closed
    assert not loader.servables[("a", 1)].closed
    assert refused(lambda: answering(store, "b"), grpc.StatusCode.NOT_FOUND) == (
        "Servable not found for request: Latest(b)"
    )
    assert len(changes) > loaded_changes  # the health service hears that b stopped answering


def test_a_model_dropped_from_the_config_keeps_its_versions_in_the_status_until_it_comes_back(
    tmp_path: Path, loader: FakeLoader, make_store: MakeStore
) -> None:
    """As TF Serving's state monitor keeps them: a removed model's versions read END, a load waiting
    for its retry ends with its error; brought back, its new versions show over the old."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    publish(first, 1, 2)
    publish(second, 4)
    loader.fail[2] = ValueError("truncated")
    store = make_store(
        config(("a", first), ("b", second), policy="all"), load_retries=3, load_retry_interval_s=60
    )
    store.poll()
    assert states(store, "a") == {2: LOADING, 1: AVAILABLE}

    entry_a = store._models["a"]
    store.reload(config(("b", second)))
    assert not store.holds(entry_a)
    assert outcome(entry_a) == (1, AVAILABLE, "")  # what a reload waiting for `a` would have seen
    assert states(store, "a") == {2: END, 1: END}
    (retried,) = store.statuses("a", 2)
    assert (retried.error_code, retried.error_message.endswith("truncated")) == (
        grpc.StatusCode.UNKNOWN,
        True,
    )
    refused(lambda: answering(store, "a"), grpc.StatusCode.NOT_FOUND)

    del loader.fail[2]
    publish(first, 3)
    store.reload(config(("a", first), ("b", second)))
    store.poll()
    assert states(store, "a") == {3: AVAILABLE, 2: END, 1: END}
    assert answering(store, "a") == 3


def outcome(entry: ModelEntry) -> tuple[int, str, str] | None:
    first = entry.first_outcome
    return None if first is None else (first.version, first.state, first.error_message)


def test_a_reload_names_the_models_it_adds_and_each_ones_first_version_to_settle(
    tmp_path: Path, loader: FakeLoader, make_store: MakeStore
) -> None:
    """What a reload call waits for (TF Serving's WaitUntilModelsAvailable): models new by name only,
    and for each the first version to become AVAILABLE or END, kept as it was then."""
    paths = {name: tmp_path / name for name in ("a", "b", "c", "d")}
    for path in paths.values():
        path.mkdir()
    publish(paths["a"], 1)
    publish(paths["b"], 1, 2)
    publish(paths["c"], 5)
    loader.fail[5] = ValueError("no graph")
    store = make_store(config(("a", paths["a"])))
    store.poll()

    added = store.reload(config(("a", paths["a"]), ("b", paths["b"]), ("c", paths["c"]), ("d", paths["d"])))
    assert [entry.name for entry in added] == ["b", "c", "d"]
    assert all(entry.first_outcome is None for entry in added)
    store.poll()
    b, c, d = added
    assert outcome(b) == (2, AVAILABLE, "")  # the newest loads first
    assert outcome(c) == (5, END, f"Failed to load c version 5 from {paths['c'] / '5'}: no graph")
    assert outcome(d) is None  # no version yet: a reload call waits on

    publish(paths["b"], 3)
    store.poll()  # 3 replaces 2, which goes to END: the outcome stays the one first seen
    assert outcome(b) == (2, AVAILABLE, "")
    assert b.first_outcome is not None and b.first_outcome.servable is None  # holds no unloaded model
    assert store.reload(config(("b", paths["a"]))) == [], "a model new in base path only is not new"


def test_a_new_base_path_under_the_same_name_keeps_serving_through_the_switch(
    tmp_path: Path, loader: FakeLoader, make_store: MakeStore
) -> None:
    """TF Serving knows a version by name and number: a number the new path holds too serves on
    unreloaded, a new one loads before the old ones go, and one that fails leaves the old serving."""
    old, same, newer, broken = (tmp_path / name for name in ("old", "same", "newer", "broken"))
    for path, version in ((old, 3), (same, 3), (newer, 5), (broken, 7)):
        path.mkdir()
        publish(path, version)
    loader.fail[7] = ValueError("no graph")
    store = make_store(config(("m", old)))
    store.poll()
    labelled = config(("m", same))
    labelled.model_config_list.config[0].version_labels["stable"] = 3  # 3 is available: allowed

    assert store.reload(labelled) == [], "a model new in base path only is not new"
    store.poll()
    assert (states(store), answering(store), loader.tries(3)) == ({3: AVAILABLE}, 3, 1)

    store.reload(config(("m", broken)))
    store.poll()
    assert states(store) == {7: END, 3: AVAILABLE} and answering(store) == 3

    store.reload(config(("m", newer)))
    assert answering(store) == 3  # before the new path is polled
    store.poll()
    assert states(store) == {7: END, 5: AVAILABLE, 3: END} and answering(store) == 5
    assert loader.servables[("m", 3)].closed


def test_a_reload_does_not_wait_for_a_load_under_way_and_a_model_it_removes_never_serves(
    tmp_path: Path, base: Path, loader: FakeLoader, make_store: MakeStore
) -> None:
    """As TF Serving's UpdateConfig, a reload changes what is aspired at once, whatever the poller is
    loading; a version that finishes loading after its model left the config is unloaded, END."""
    other = tmp_path / "other"
    other.mkdir()
    publish(other, 4)
    store, gate, poll = serving_1_while_2_loads(base, loader, make_store)

    labelled = config(("m", base), ("other", other))
    labelled.model_config_list.config[0].version_labels["stable"] = 1
    reload = threading.Thread(target=store.reload, args=(labelled,))
    reload.start()
    reload.join(WAIT_S)
    assert not reload.is_alive(), "the reload waited for version 2's load"
    assert states(store) == {2: LOADING, 1: AVAILABLE} and answering(store, label="stable") == 1

    store.reload(config(("other", other)))
    gate.set()
    poll.join(WAIT_S)
    assert states(store) == {2: END, 1: END}
    assert loader.servables[("m", 2)].closed and loader.servables[("m", 1)].closed
    refused(lambda: answering(store, "m"), grpc.StatusCode.NOT_FOUND)


def test_the_poller_picks_up_new_versions(base: Path, loader: FakeLoader, make_store: MakeStore) -> None:
    publish(base, 1)
    store = make_store(config(("m", base)))
    store.start_polling(0.02)
    wait_for(lambda: states(store) == {1: AVAILABLE}, WAIT_S, "version 1 to be loaded by the poller")
    publish(base, 2)
    wait_for(lambda: states(store) == {2: AVAILABLE, 1: END}, WAIT_S, "the poller to roll over to 2")
    store.stop()
    assert loader.tries(2) == 1


def test_wait_idle_waits_for_every_request_in_flight(base: Path, make_store: MakeStore) -> None:
    publish(base, 1)
    store = make_store(config(("m", base)))
    store.poll()
    with store.serving("m"):
        assert not store.wait_idle(0.01)
    assert store.wait_idle(0.01)
