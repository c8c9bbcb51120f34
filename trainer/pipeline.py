"""One training run, start to finish: training (alone, or as one of several workers), evaluation, export,
and the run's progress file for the dashboard.

`python -m trainer` decides which runs to make and checks what is cheap to check (flags, data, the model
directory, TF_CONFIG) before this module, and TensorFlow with it, is imported.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from contract import model_dir
from contract.signature import scale_pixels
from trainer.cluster import Cluster, ClusterError
from trainer.config import TrainConfig
from trainer.data import Mnist
from trainer.distributed import STRATEGY, WorkerGroup, remove_backup
from trainer.errors import INTERRUPT_REQUESTED, ExportError, InterruptedAfterExport
from trainer.evaluate import source_metrics, test_metrics
from trainer.export import staged_version
from trainer.model_card import model_card
from trainer.progress import RunProgress, new_run_id
from trainer.train import Trained, train

WARMUP_IMAGES = 8  # test images replayed by TF Serving before a version serves
POOR_ACCURACY = 0.9  # below this a version is worth a warning: even the quick example reaches 93%
INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


def run(config: TrainConfig, data: Mnist, cluster: Cluster | None, worker_timeout_s: float) -> int | None:
    """Train, evaluate and export `config`'s model; with a `cluster`, as one of its workers, of which
    the chief alone writes (progress and the version) and the others train their share. Returns the
    version exported (None on a worker other than the chief). Ctrl-C once the version is published is
    InterruptedAfterExport: the version stays, and is reported as exported."""
    started, run_id = time.monotonic(), new_run_id()
    if cluster is not None and not cluster.is_chief:
        _train_for_the_chief(config, data, WorkerGroup(cluster, worker_timeout_s, None))
        return None
    progress = RunProgress(config.base_path, run_id, config.arch, config.epochs)
    group: WorkerGroup | None = None
    trained_everywhere = False
    version: int | None = None
    try:
        if cluster is not None:  # in the try: a worker that cannot join marks the run failed
            group = WorkerGroup(cluster, worker_timeout_s, progress)
        if group is None:
            trained = train(config, data, progress)
        else:
            trained = group.train(config, data, progress)
            trained_everywhere = True  # the others now wait for this worker's word on the export
        print("evaluating on the test set and exporting...", file=sys.stderr, flush=True)
        artefacts, metrics = _evaluate(config, data, trained, group, started, run_id)
        warmup = scale_pixels(data.test.images[:WARMUP_IMAGES])
        model_dir.remove_stale_staging(config.base_path)
        with (
            staged_version(
                trained.model, config.base_path, config.model_name, artefacts, warmup, run_id
            ) as staged,
            _interrupts_held() as caught,
        ):
            if INTERRUPT_REQUESTED.is_set():  # an interrupt that TensorFlow's clean-up swallowed
                raise KeyboardInterrupt
            # From the rename on, nothing may undo or hide the version: an interrupt waits until the
            # version is recorded, reported and, with several workers, announced to the others.
            version = _publish(staged, config, progress, trained, metrics, started)
            if group is not None:
                _tell_the_others(group, config)
        if caught:
            raise InterruptedAfterExport(version)
    except BaseException as err:
        if version is not None:  # published: whatever came after, the version stands
            raise (InterruptedAfterExport(version) if isinstance(err, KeyboardInterrupt) else err) from None
        with _interrupts_held():  # another Ctrl-C must not cut the record short: it stayed "running"
            progress.failed(
                "interrupted" if isinstance(err, KeyboardInterrupt) else f"{type(err).__name__}: {err}"
            )
        if group is not None and trained_everywhere:  # tell the others: nothing exported
            with contextlib.suppress(ClusterError):  # this worker's own error is the one to report
                group.agree_on_export(False)
        raise
    return version


@contextlib.contextmanager
def _interrupts_held() -> Iterator[list[int]]:
    """Ctrl-C and SIGTERM noted, not acted on, for the block's length; the caller acts on the list."""
    caught: list[int] = []
    held = {signum: signal.signal(signum, lambda got, _: caught.append(got)) for signum in INTERRUPTS}
    try:
        yield caught
    finally:
        for signum, handler in held.items():
            signal.signal(signum, handler)


def _publish(
    staged: Path,
    config: TrainConfig,
    progress: RunProgress,
    trained: Trained,
    metrics: dict[str, Any],
    started: float,
) -> int:
    """Rename the staged version into place, record it and say so. Once the rename is done, a failure
    to record or say it (a full disk, a closed pipe) is a warning: the version is there to serve."""
    try:
        version, path = model_dir.publish(staged, config.base_path)
    except model_dir.NoVersionLeft as err:
        raise ExportError(str(err)) from None
    try:
        progress.done(version)
    except OSError as err:
        print(
            f"warning: version {version} exported; its progress record not: {err.strerror}", file=sys.stderr
        )
    minutes, seconds = divmod(int(time.monotonic() - started), 60)
    history = trained.history
    kept = f", stopped early with epoch {history['best_epoch']}'s weights" if history["stopped_early"] else ""
    with contextlib.suppress(OSError):  # stdout gone (a closed pipe): the version is exported all the same
        print(
            f"exported {config.model_name} version {version} ({config.arch}): test accuracy "
            f"{metrics['accuracy']:.2%}, recall {metrics['recall']:.2%}, loss {metrics['loss']:.4f} "
            f"in {minutes}m{seconds:02d}s{kept} -> {path}",
            flush=True,
        )
        if metrics["accuracy"] < POOR_ACCURACY:  # served as the latest all the same: say so
            print(
                f"warning: version {version} reads only {metrics['accuracy']:.2%} of MNIST's test digits "
                "right, and a server takes it as the latest version: train longer or on more data "
                "(the --help examples say how much)",
                file=sys.stderr,
                flush=True,
            )
    return version


def _train_for_the_chief(config: TrainConfig, data: Mnist, group: WorkerGroup) -> None:
    """A worker other than the chief: trains its share, writes nothing, and waits for the export."""
    group.train(config, data, None)
    if not group.agree_on_export(False):
        raise ClusterError(f"{group.cluster.me}: worker 0 exported no version (see its output)")
    print(f"{group.cluster.me} of {len(group.cluster.workers)}: trained; worker 0 exported the version")


def _evaluate(
    config: TrainConfig,
    data: Mnist,
    trained: Trained,
    group: WorkerGroup | None,
    started: float,
    run_id: str,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The artefacts written beside the model (history, test metrics, model card), and the metrics."""
    metrics = test_metrics(trained.model, data.test)
    sources = {"MNIST test": data.test}
    if data.handwriting is not None:
        sources["handwriting dev"] = data.handwriting.dev
    metrics["by_source"] = source_metrics(trained.model, sources)
    workers, strategy = (1, "none") if group is None else (len(group.cluster.workers), STRATEGY)
    resumed = trained.history.get("resumed_after_epoch")
    card = model_card(
        config, data, trained.model, time.monotonic() - started, run_id, workers, strategy, resumed
    )
    return {
        model_dir.HISTORY: trained.history,
        model_dir.METRICS: metrics,
        model_dir.MODEL_CARD: card,
    }, metrics


def _tell_the_others(group: WorkerGroup, config: TrainConfig) -> None:
    """The version is published: the other workers hear so, and the training backup goes."""
    try:
        group.agree_on_export(True)
    except ClusterError as err:  # the version is published all the same; a peer missed the news
        print(f"warning: {err}", file=sys.stderr)
    remove_backup(config)
