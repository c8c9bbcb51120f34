"""Training across workers (TF_CONFIG, MultiWorkerMirroredStrategy): worker processes on loopback ports.

Each worker is a real `python -m trainer` with its own TF_CONFIG, as on separate machines; they share
the model directory, as machines share a volume.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from contract import model_dir
from tests.conftest import DATA_DIR, ROOT, free_port, wait_for
from trainer import guard
from trainer.cluster import Cluster, TfConfigError, cluster_from_env

QUICK = ("--arch", "seed", "--limit", "6000", "--epochs", "2")


class Workers:
    """Worker processes of one cluster on loopback ports; their output goes to files to read back."""

    def __init__(self, model_dir: Path, count: int = 2) -> None:
        self.model_dir, self.addresses = model_dir, [f"127.0.0.1:{free_port()}" for _ in range(count)]
        self.processes: dict[int, subprocess.Popen[str]] = {}
        self.logs: dict[int, Path] = {}

    def start(self, index: int, *args: str) -> None:
        config = {"cluster": {"worker": self.addresses}, "task": {"type": "worker", "index": index}}
        log = self.logs[index] = self.model_dir.parent / f"worker-{index}.log"
        self.processes[index] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trainer",
                *args,
                "--model-dir",
                str(self.model_dir),
                "--data-dir",
                str(DATA_DIR),
            ],
            cwd=ROOT,
            env={**os.environ, "TF_CONFIG": json.dumps(config), "PYTHONUNBUFFERED": "1"},
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            text=True,
        )

    def output(self, index: int) -> str:
        return self.logs[index].read_text()

    def wait(self, timeout: float = 240) -> dict[int, int]:
        return {index: process.wait(timeout) for index, process in self.processes.items()}

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    made = Workers(tmp_path / "models")
    yield made
    made.stop()


def test_two_workers_train_one_version_whose_card_says_two_workers(workers: Workers) -> None:
    for index in (0, 1):
        workers.start(index, *QUICK)
    assert workers.wait() == {0: 0, 1: 0}, workers.output(0) + workers.output(1)

    base = workers.model_dir / "mnist"
    assert model_dir.versions(base) == [1]
    extra = base / "1" / model_dir.ASSETS_EXTRA
    card = json.loads((extra / "model_card.json").read_text())
    assert (card["workers"], card["strategy"]) == (2, "MultiWorkerMirroredStrategy")
    assert json.loads((extra / "metrics.json").read_text())["accuracy"] >= 0.90
    assert not (base / ".backup").exists()  # an exported run leaves nothing to resume
    assert "exported mnist version 1" in workers.output(0)
    assert "worker 0 exported the version" in workers.output(1)
    for index in (0, 1):  # quiet: TensorFlow's own logging stays out of a worker's output
        assert "E0000" not in workers.output(index) and "W0000" not in workers.output(index)


def test_two_workers_train_the_batch_normalised_network(workers: Workers) -> None:
    """`plus`, the default, has batch norm, whose statistics each worker kept from its own shard
    (Keras makes them per replica): the workers' val_loss differed, so their early stopping could
    too, leaving one waiting for the other. Its moments are now the global batch's, and worker 0's
    stop is every worker's: both finish, at the same epoch."""
    for index in (0, 1):
        workers.start(index, "--arch", "plus", "--limit", "1200", "--epochs", "4", "--patience", "1")
    assert workers.wait() == {0: 0, 1: 0}, workers.output(0) + workers.output(1)
    history_file = model_dir.artefact_path(workers.model_dir / "mnist", 1, model_dir.HISTORY)
    history = json.loads(history_file.read_text())
    assert len(history["val_loss"]) == len(history["epochs"]) >= 2
    assert "worker 0 exported the version" in workers.output(1)


def test_a_killed_worker_stops_the_others_and_nothing_is_exported_then_a_restart_resumes(
    workers: Workers,
) -> None:
    """Worker 1 killed mid-run: worker 0 exits non-zero in one line naming it, no version appears, and
    the last epoch's checkpoint stays; the same cluster started again resumes after that epoch."""
    longer = ("--arch", "seed", "--limit", "6000", "--epochs", "20", "--patience", "20")
    for index in (0, 1):
        workers.start(index, *longer)
    wait_for(lambda: "epoch 2/20" in workers.output(0), 180, "worker 0 to finish its second epoch")
    workers.processes[1].kill()
    started = time.monotonic()
    codes = workers.wait()
    assert codes[1] != 0 and codes[0] == 1, workers.output(0)
    assert time.monotonic() - started < 60  # a dead peer is noticed at its next step, not at a timeout
    errors = [line for line in workers.output(0).splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"worker 1 ({workers.addresses[1]}) did not answer" in errors[0]
    assert "Traceback" not in workers.output(0)
    base = workers.model_dir / "mnist"
    assert model_dir.versions(base) == []
    assert (base / ".backup" / "checkpoint").is_file()

    resumed = ("--arch", "seed", "--limit", "6000", "--epochs", "3")
    for index in (0, 1):
        workers.start(index, *resumed)
    assert workers.wait() == {0: 0, 1: 0}, workers.output(0)
    assert "resuming after epoch 2" in workers.output(0) or "resuming after epoch 3" in workers.output(0)
    history = json.loads((base / "1" / model_dir.ASSETS_EXTRA / "history.json").read_text())
    assert history["epochs"] == [1, 2, 3]  # the epochs before the restart are in the record
    card = json.loads((base / "1" / model_dir.ASSETS_EXTRA / "model_card.json").read_text())
    assert card["resumed_after_epoch"] in (2, 3)


def test_sigterm_stops_a_worker_cleanly_once_the_workers_have_met(workers: Workers) -> None:
    """TensorFlow's coordination service takes SIGTERM over (a preemption notice that lets the process
    run on): `docker stop` had to kill a run. SIGTERM stops it as Ctrl-C does, and its peer says so."""
    longer = ("--arch", "seed", "--limit", "6000", "--epochs", "20", "--patience", "20")
    for index in (0, 1):
        workers.start(index, *longer)
    wait_for(lambda: "epoch 1/20" in workers.output(0), 180, "worker 0 to finish its first epoch")
    workers.processes[1].send_signal(signal.SIGTERM)
    codes = workers.wait(60)
    assert codes == {0: 1, 1: 130}, workers.output(0) + workers.output(1)
    assert "interrupted: no version was exported" in workers.output(1)
    assert model_dir.versions(workers.model_dir / "mnist") == []


def test_workers_started_with_different_flags_stop_at_once_naming_them(workers: Workers) -> None:
    """Another --epochs trained the copies apart and had worker 1 say no version was exported when one
    was; another --arch or batch size failed at the first step as "did not answer"."""
    workers.start(0, *QUICK)
    workers.start(1, "--arch", "seed", "--limit", "6000", "--epochs", "3")
    assert workers.wait(120) == {0: 1, 1: 1}, workers.output(0) + workers.output(1)
    for index in (0, 1):
        errors = [line for line in workers.output(index).splitlines() if line.startswith("error:")]
        assert errors == [
            f"error: worker {index} ({workers.addresses[index]}): the workers were started with different "
            "settings (epochs): start every worker with the same flags; no version exported"
        ]
    assert model_dir.versions(workers.model_dir / "mnist") == []
    assert not (workers.model_dir / "mnist" / ".backup").exists()


def test_only_a_run_of_the_same_settings_resumes_a_backup(tmp_path: Path) -> None:
    """More epochs or patience may resume a backup; another network, batch, seed or cluster may not
    (a backup of `seed` crashed a `plus` run, and one of other flags silently became its first epochs)."""
    from trainer.config import TrainConfig
    from trainer.distributed import Backup, resumable_settings

    run = TrainConfig.for_arch("seed", limit=6000)
    settings = resumable_settings(run, 2)
    assert settings == resumable_settings(replace(run, epochs=40, patience=9), 2)
    for other in (
        replace(run, batch_size=64),
        replace(run, seed=7),
        TrainConfig.for_arch("plus", limit=6000),
    ):
        assert resumable_settings(other, 2) != settings
    assert resumable_settings(run, 3) != settings
    assert Backup.settings(tmp_path) is None  # a backup from before settings were kept: not resumed
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    assert Backup.settings(tmp_path) == settings


def test_a_worker_whose_peers_never_come_gives_up_naming_them(workers: Workers) -> None:
    workers.start(0, *QUICK, "--worker-timeout", "10")
    started = time.monotonic()
    assert workers.wait(60)[0] != 0
    assert time.monotonic() - started < 40
    output = workers.output(0).strip()
    assert output.splitlines()[-1] == (
        f"error: worker 0 ({workers.addresses[0]}): the workers did not find each other within 10s: "
        f"worker 1 ({workers.addresses[1]}) not answering; no version exported"
    )
    runs = list((workers.model_dir / "mnist" / ".runs").glob("*/progress.json"))
    assert [json.loads(run.read_text())["state"] for run in runs] == ["failed"]


@pytest.mark.parametrize("interrupt", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_an_interrupt_while_the_workers_look_for_each_other_ends_the_worker(
    tmp_path: Path, interrupt: signal.Signals
) -> None:
    """TensorFlow blocks the trainer, which cannot act on Ctrl-C, while its peers are missing: the
    guard, which the terminal's Ctrl-C reaches too, ends it (the guard used to die of it, and the
    trainer ran on past its timeout, deaf to SIGTERM). So with SIGTERM to the group (`timeout`) and a
    closed terminal: the guard died of those, and the trainer stayed blocked for good."""
    workers = Workers(tmp_path / "models")
    config = {"cluster": {"worker": workers.addresses}, "task": {"type": "worker", "index": 0}}
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trainer",
            *QUICK,
            "--worker-timeout",
            "120",
            "--model-dir",
            str(workers.model_dir),
        ],
        cwd=ROOT,
        env={**os.environ, "TF_CONFIG": json.dumps(config)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a terminal's process group: Ctrl-C reaches the trainer and its guard
    ) as trainer:
        wait_for(lambda: _guard_of(trainer.pid) is not None, 60, "the trainer's guard to take Ctrl-C")
        os.killpg(trainer.pid, interrupt)
        _, errors = trainer.communicate(timeout=30)
    assert errors.strip().splitlines()[-1] == "interrupted: no version was exported"
    runs = list((workers.model_dir / "mnist" / ".runs").glob("*/progress.json"))
    assert [json.loads(run.read_text())["state"] for run in runs] == ["failed"]


def _guard_of(pid: int) -> int | None:
    """The trainer.guard process that `pid` started, once it catches its interrupts (in its SigCgt)."""
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
            caught = next(
                line for line in (entry / "status").read_text().splitlines() if line.startswith("SigCgt")
            )
        except (OSError, StopIteration):
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if (
            parent == pid
            and b"trainer.guard" in command
            and all(int(caught.split()[1], 16) & (1 << (signum - 1)) for signum in guard.INTERRUPTS)
        ):
            return int(entry.name)
    return None


@pytest.mark.fast
@pytest.mark.parametrize(
    ("tf_config", "expected"),
    [
        ("", None),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}', None),  # alone
        (
            '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}',
            Cluster(("a:1", "b:2"), 1),
        ),
    ],
)
def test_tf_config_names_the_cluster_and_this_worker(tf_config: str, expected: Cluster | None) -> None:
    assert cluster_from_env({"TF_CONFIG": tf_config}) == expected


@pytest.mark.fast
@pytest.mark.parametrize(
    ("tf_config", "message"),
    [
        ("{not json", "TF_CONFIG must look like"),
        ('{"cluster": {}, "task": {"index": 0}}', "TF_CONFIG must look like"),
        ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "ps", "index": 0}}', "only 'worker'"),
        ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"index": 0}}', '"type": "worker" beside its'),
        (
            '{"cluster": {"worker": ["a:1", "b"]}, "task": {"type": "worker", "index": 0}}',
            "host:port addresses",
        ),
        (
            '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
            "index 2 is not one",
        ),
        (
            '{"cluster": {"worker": ["a:1", "b:port"]}, "task": {"type": "worker", "index": 0}}',
            "ports 1-65535",
        ),
        (
            '{"cluster": {"worker": ["a:1", "b:70000"]}, "task": {"type": "worker", "index": 0}}',
            "ports 1-65535",
        ),
        ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}', "is str, not a list"),
        (
            '{"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}',
            "an address twice",
        ),
    ],
)
def test_a_malformed_tf_config_is_refused_with_what_it_should_look_like(tf_config: str, message: str) -> None:
    with pytest.raises(TfConfigError, match=message):
        cluster_from_env({"TF_CONFIG": tf_config})


def test_a_malformed_tf_config_stops_the_trainer_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trainer", "--model-dir", str(tmp_path)],
        cwd=ROOT,
        env={
            **os.environ,
            "TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 5}}',
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: TF_CONFIG task index 5 is not one of the 2 workers"


def test_a_worker_whose_port_is_taken_stops_in_one_line(tmp_path: Path) -> None:
    """Two workers given one index, or another program on the port: TensorFlow's gRPC server could
    not start, a traceback, and the run's record left "running"."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        config = {
            "cluster": {"worker": [address, f"127.0.0.1:{free_port()}"]},
            "task": {"type": "worker", "index": 0},
        }
        result = subprocess.run(
            [sys.executable, "-m", "trainer", "--model-dir", str(tmp_path), "--data-dir", str(DATA_DIR)],
            cwd=ROOT,
            env={**os.environ, "TF_CONFIG": json.dumps(config)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: worker 0 ({address}) cannot listen on port {address.rsplit(':', 1)[1]} (Address already "
        "in use): give each worker its own index in TF_CONFIG, and a port no other program holds"
    )
