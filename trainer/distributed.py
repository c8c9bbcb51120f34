"""Training across workers: tf.distribute's MultiWorkerMirroredStrategy, configured by `TF_CONFIG`.

Every worker runs the same command with its own `TF_CONFIG` (`{"cluster": {"worker": [addresses]},
"task": {"type": "worker", "index": i}}`, as tf.distribute defines it). Each holds a copy of the
model, reads its shard of the training set, and the gradients are summed across workers at every step,
so the copies stay identical (batch norm's statistics too: its moments are summed across workers). The
recipe is stated for the global batch: with N workers each takes batch_size / N examples a step, over
the whole global batches of an epoch (alone, the trainer also runs the last, partial one).

Keras 3's `model.fit` cannot run under this strategy with more than one worker (it reduces its logs
wrongly: keras-team/keras#20585), so the loop here is a custom one: `strategy.run` of a `tf.function`
step, `strategy.reduce` of the summed loss and counts. The epoch report, early stopping and the best
weights are Keras's own callbacks, driven by hand. Validation runs whole on every worker: the weights
are the same everywhere, so every worker computes the same val_loss and stops at the same epoch.

Faults: a peer that dies fails the next step (TensorFlow notices the closed connection, or its
coordination service the missing heartbeats); the worker then exits non-zero naming the peers that do
not answer, and nothing is exported. Workers that do not find each other within `--worker-timeout`
seconds are ended by trainer.guard. Each epoch ends with a checkpoint (model, optimizer, epoch) in
`<model>/.backup`, written by worker 0; a run restarted with the same cluster resumes after the last
completed epoch, and a run that exports removes it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from contract import model_dir
from trainer import guard
from trainer.cluster import Cluster, ClusterError, silent_peers
from trainer.config import TrainConfig
from trainer.data import Mnist
from trainer.model import build_model
from trainer.progress import RunProgress
from trainer.train import (
    EpochReport,
    Trained,
    compiled,
    early_stopping,
    learning_rate,
    make_dataset,
    training_history,
)

STRATEGY = "MultiWorkerMirroredStrategy"
EXPORT_WAIT_S = 900  # how long the other workers wait for worker 0 to evaluate and export


class WorkerGroup:
    """This process's part in a run over several workers: the strategy that links them, the training,
    and the last word on whether worker 0 exported a version."""

    def __init__(self, cluster: Cluster, timeout_s: float, progress: RunProgress | None) -> None:
        """`timeout_s`: the longest the workers may take to find each other (trainer.guard ends this
        process then). Once they have, a peer that dies or is cut off is noticed by TensorFlow's
        coordination service (its heartbeats) and the connection closing, which fail the next step.
        The steps' collectives get no timeout of their own: TensorFlow keeps a thread per timed
        collective for the whole timeout, thousands of them at a few hundred steps a second."""
        self.cluster = cluster
        ours = signal.getsignal(signal.SIGTERM)
        print(
            f"{cluster.me}: finding the other {len(cluster.workers) - 1} worker(s), for up to {timeout_s:g}s",
            file=sys.stderr,
            flush=True,
        )
        try:
            with _guarded(cluster, timeout_s, progress):
                self.strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except tf.errors.OpError as err:  # its server could not start, past check_own_port
            raise ClusterError(
                f"{cluster.me}: could not join the workers: {err.message.splitlines()[0]}"
            ) from None
        # TensorFlow's coordination service takes SIGTERM over for its preemption notice, a handler that
        # lets the process run on: `docker stop` and Kubernetes ended a run only by SIGKILL, and `kill`
        # did nothing. The trainer's own handler (stop cleanly, export nothing) is put back.
        signal.signal(signal.SIGTERM, ours)

    def train(self, config: TrainConfig, data: Mnist, progress: RunProgress | None) -> Trained:
        """Train with every worker; returns the model (a plain one, outside the strategy, so it exports
        and evaluates as a single worker's does) with the best validation epoch's weights."""
        self._check_same_settings(config)
        workers = len(self.cluster.workers)
        if config.batch_size % workers:
            nearest = config.batch_size // workers * workers or workers
            raise ClusterError(
                f"the batch size {config.batch_size} does not split evenly over {workers} workers: give "
                f"--batch-size a multiple of {workers}, such as {nearest}"
            )
        steps = len(data.train) // config.batch_size  # whole global batches: every worker runs as many
        if steps < 1:
            raise ClusterError(
                f"{len(data.train)} training images make no whole batch of {config.batch_size}"
            )
        keras.utils.set_random_seed(config.seed)
        shared_backup = config.base_path / model_dir.BACKUP
        # tf.distribute's rule: every worker saves (saving takes part in collectives), the chief where it
        # counts and the others into a scratch directory of their own, removed afterwards.
        chief = self.cluster.is_chief
        backup = shared_backup if chief else Path(tempfile.mkdtemp(prefix="mnist-worker-"))
        try:
            with self.strategy.scope():
                model = build_model(config.arch, synchronized=True)
                optimizer = keras.optimizers.Adam(learning_rate(config, steps))
                optimizer.build(model.trainable_variables)
                epoch_done = tf.Variable(0, dtype=tf.int64, trainable=False)
            checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_done)
            settings = resumable_settings(config, len(self.cluster.workers))
            latest = tf.train.latest_checkpoint(str(shared_backup))  # every worker resumes from the chief's
            if latest and Backup.settings(shared_backup) != settings:
                print(
                    f"not resuming from {shared_backup}: it holds a run of other settings; starting afresh",
                    file=sys.stderr,
                )
            elif latest:
                checkpoint.restore(latest)
                print(f"resuming after epoch {int(epoch_done.numpy())} from {shared_backup}", file=sys.stderr)
            manager = tf.train.CheckpointManager(checkpoint, str(backup), max_to_keep=1)
            saver = Backup(manager, backup, settings)
            history = _train_epochs(
                config, data, self.strategy, model, optimizer, steps, progress, saver, epoch_done, chief
            )
        except tf.errors.OpError as err:
            raise self._failed("training", err) from None
        finally:
            if not chief:
                shutil.rmtree(backup, ignore_errors=True)
        plain = compiled(build_model(config.arch))
        plain.set_weights(model.get_weights())
        return Trained(plain, history)

    def _check_same_settings(self, config: TrainConfig) -> None:
        """Every worker's hyperparameters the same, before any trains or writes a backup: workers started
        with another --arch or batch size failed at their first step as "did not answer", and with
        other --epochs trained apart and said no version was exported when one was. Each worker
        gathers every worker's checksum of each setting, and names those that differ."""
        settings = config.hyperparameters()
        names = sorted(settings)
        mine = [zlib.crc32(f"{name}={settings[name]!r}".encode()) for name in names]
        try:
            gathered = self.strategy.gather(self.strategy.run(lambda: tf.constant([mine], tf.int64)), axis=0)
        except tf.errors.OpError as err:
            raise self._failed("comparing settings", err) from None
        table = np.asarray(gathered)
        differ = [name for column, name in enumerate(names) if len(set(table[:, column])) > 1]
        if differ:
            raise ClusterError(
                f"{self.cluster.me}: the workers were started with different settings ({', '.join(differ)}): "
                "start every worker with the same flags; no version exported"
            )

    def agree_on_export(self, exported: bool) -> bool:
        """The last collective step: every worker meets here once worker 0 has exported (or failed to),
        so all leave together (one that left early would make the others wait at TensorFlow's shutdown
        barrier and report it as crashed) and each learns whether a version was exported."""
        flags = self.strategy.run(lambda: tf.constant(1.0 if exported else 0.0))
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=EXPORT_WAIT_S)
        try:
            total = self.strategy.extended.reduce_to(tf.distribute.ReduceOp.SUM, flags, flags, options)
        except tf.errors.OpError as err:
            outcome = "the version is exported all the same" if exported else "no version exported"
            raise self._failed("waiting for the export", err, outcome) from None
        return float(self.strategy.experimental_local_results(total)[0]) > 0

    def _failed(
        self, during: str, err: tf.errors.OpError, outcome: str = "no version exported"
    ) -> ClusterError:
        silent = silent_peers(self.cluster)
        who = ", ".join(silent) if silent else "another worker"
        return ClusterError(
            f"{self.cluster.me}: {during} stopped: {who} did not answer ({type(err).__name__}); {outcome}"
        )


@contextmanager
def _guarded(cluster: Cluster, timeout_s: float, progress: RunProgress | None) -> Iterator[None]:
    """Run the block under trainer.guard, which ends this process if the block outlasts `timeout_s`."""
    watch = {
        "parent": os.getpid(),
        "timeout_s": timeout_s,
        "workers": list(cluster.workers),
        "index": cluster.index,
        "progress": str(progress.path) if progress is not None else None,
    }
    # Started with its interrupts ignored, which it inherits until it takes them over itself: one that
    # came while it starts up would otherwise end it, leaving no one to end this process.
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in guard.INTERRUPTS}
    try:
        watching = subprocess.Popen(
            [sys.executable, "-m", "trainer.guard", json.dumps(watch)], stdin=subprocess.PIPE
        )
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    try:
        yield
    finally:
        assert watching.stdin is not None  # a pipe, as asked
        watching.stdin.close()  # the end of its input: through
        watching.wait()


def resumable_settings(config: TrainConfig, workers: int) -> dict[str, object]:
    """What a run must share with the one that left a backup to resume from it: every hyperparameter
    but how long to train (more epochs, more patience), and the number of workers. A backup of another
    run crashed a run of another network, and silently became a run of other settings' first epochs."""
    kept = {k: v for k, v in config.hyperparameters().items() if k not in ("epochs", "patience")}
    return json.loads(json.dumps({**kept, "workers": workers}))  # as it reads back from the file


@dataclass(frozen=True)
class Backup:
    """The end-of-epoch checkpoint, the history so far and the run's settings beside it, so a resumed
    run reports whole, and only a run of the same settings resumes."""

    manager: tf.train.CheckpointManager
    directory: Path
    run_settings: dict[str, object]

    def save(self, history: dict[str, list[float]]) -> None:
        self.manager.save()
        for name, document in (("settings.json", self.run_settings), ("history.json", history)):
            staging = self.directory / f"{name}.tmp"  # replaced whole: a kill never leaves half of it
            staging.write_text(json.dumps(document))
            os.replace(staging, self.directory / name)

    @staticmethod
    def settings(directory: Path) -> dict[str, object] | None:
        """The settings of the run that saved the backup in `directory`; None if they cannot be read."""
        try:
            saved = json.loads((directory / "settings.json").read_text())
        except (OSError, ValueError):
            return None
        return saved if isinstance(saved, dict) else None

    @staticmethod
    def history(directory: Path, epochs: int) -> dict[str, list[float]] | None:
        """The first `epochs` epochs' figures, as saved beside the checkpoint; None if they are not all
        there (a kill between the checkpoint and its history): the report then starts afresh."""
        try:
            history = json.loads((directory / "history.json").read_text())
        except (OSError, ValueError):
            return None
        if any(len(values) < epochs for values in history.values()):
            return None
        return {name: values[:epochs] for name, values in history.items()}


def remove_backup(config: TrainConfig) -> None:
    """Once the version is exported, a restart has nothing to resume."""
    shutil.rmtree(config.base_path / model_dir.BACKUP, ignore_errors=True)


def _train_epochs(
    config: TrainConfig,
    data: Mnist,
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    steps: int,
    progress: RunProgress | None,
    backup: Backup,
    epoch_done: tf.Variable,
    chief: bool,
) -> dict[str, Any]:
    train_batches = iter(
        strategy.distribute_datasets_from_function(
            lambda shard: make_dataset(
                data.train, config, True, shard, data.handwriting.train if data.handwriting else None
            )
        )
    )
    global_batch = config.batch_size

    @tf.function
    def train_step() -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        def replica_step(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, ...]:
            with tf.GradientTape() as tape:
                probabilities = model(images, training=True)
                per_example = keras.losses.categorical_crossentropy(labels, probabilities)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
            return (loss, *_counts(labels, probabilities))

        per_replica = strategy.run(replica_step, args=next(train_batches))
        loss, correct, hits, positives = (
            strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for value in per_replica
        )
        return loss, correct, hits, positives

    val_batches = make_dataset(data.val, config, training=False)

    @tf.function
    def val_step(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, ...]:
        probabilities = model(images, training=False)
        loss = tf.reduce_sum(keras.losses.categorical_crossentropy(labels, probabilities))
        return (loss, *_counts(labels, probabilities))

    stopper = early_stopping(config)
    report = EpochReport(progress, config.epochs, steps)
    resumed_after = int(epoch_done.numpy())
    if resumed_after and (earlier := Backup.history(config.base_path / model_dir.BACKUP, resumed_after)):
        report.history = earlier  # resumed: the epochs before the restart stay in the report
    callbacks = keras.callbacks.CallbackList([stopper, report], model=model)
    model.stop_training = False
    callbacks.on_train_begin()
    for epoch in range(int(epoch_done.numpy()), config.epochs):
        callbacks.on_epoch_begin(epoch)
        totals = np.zeros(4)
        for batch in range(steps):
            totals += [float(v) for v in train_step()]
            logs = {"loss": totals[0] / (batch + 1), "accuracy": totals[1] / ((batch + 1) * global_batch)}
            callbacks.on_train_batch_end(batch, logs)
        val = np.sum([[float(v) for v in val_step(x, y)] for x, y in val_batches], axis=0)
        logs = {
            "loss": totals[0] / steps,
            "accuracy": totals[1] / (steps * global_batch),
            "recall": totals[2] / max(totals[3], 1.0),
            "val_loss": val[0] / len(data.val),
            "val_accuracy": val[1] / len(data.val),
            "val_recall": val[2] / max(val[3], 1.0),
        }
        callbacks.on_epoch_end(epoch, logs)
        epoch_done.assign(epoch + 1)
        backup.save(report.history)  # first: the epoch is done whatever the others decide
        if _chief_stops(strategy, chief, model.stop_training):
            break
    callbacks.on_train_end()
    history = training_history(report, stopper, config)
    if resumed_after:
        history["resumed_after_epoch"] = resumed_after  # for the model card
        if int(epoch_done.numpy()) == resumed_after:  # nothing left to train: the restored weights stand
            history["best_epoch"] = resumed_after
    return history


def _chief_stops(strategy: tf.distribute.Strategy, chief: bool, stop: bool) -> bool:
    """Worker 0's early-stopping decision, for every worker. Each worker computes the same val_loss
    from the same weights and the same batch-norm statistics (synchronised across workers), but a
    machine whose kernels round differently could decide otherwise, and a worker that stopped alone
    would leave the others waiting in the next step's collective."""
    flags = strategy.run(lambda: tf.constant(1.0 if chief and stop else 0.0))
    return float(strategy.reduce(tf.distribute.ReduceOp.SUM, flags, axis=None)) > 0


def _counts(labels: tf.Tensor, probabilities: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Right answers, and recall's hits (a true class scored over 0.5, as keras.metrics.Recall counts
    with one-hot labels) and positives: sums, so they add up across workers and batches."""
    correct = tf.reduce_sum(tf.cast(tf.argmax(probabilities, 1) == tf.argmax(labels, 1), tf.float32))
    hits = tf.reduce_sum(labels * tf.cast(probabilities > 0.5, tf.float32))
    return correct, hits, tf.reduce_sum(labels)
