"""Fit a network on MNIST: the tf.data pipeline, the recipe (Adam, warm-up + cosine decay, early stopping)
and the per-epoch report (progress bar on a terminal, a line otherwise, progress.json always)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from contract.signature import MAX_PIXEL
from trainer.augment import Augmentation, augment_batch
from trainer.config import TrainConfig
from trainer.data import Mnist, Split
from trainer.model import build_model
from trainer.progress import RunProgress

HISTORY_KEYS = ("loss", "accuracy", "recall", "val_loss", "val_accuracy", "val_recall")
# The handwriting set's digits elastically distorted (Simard et al. 2003) when it is mixed in.
ELASTIC_ON_THE_SET = 0.5


@dataclass(frozen=True)
class Trained:
    model: keras.Model
    history: dict[str, Any]  # what history.json holds


def to_model_input(images: np.ndarray | tf.Tensor) -> tf.Tensor:
    """uint8 [b, 28, 28] or [b, 28, 28, 1] -> float32 [b, 28, 28, 1] in [0, 1]."""
    images = tf.cast(images, tf.float32) / MAX_PIXEL
    return images if images.shape.rank == 4 else images[..., None]


def make_dataset(
    split: Split,
    config: TrainConfig,
    training: bool,
    shard: tf.distribute.InputContext | None = None,
    extra: Split | None = None,
) -> tf.data.Dataset:
    """Batches of (images, one-hot labels); shuffled and, for `plus`, augmented when training.

    With `shard` (one worker of several), this worker's share of the examples, in batches of its share
    of the global batch, endless and whole: every worker must run the same number of steps. `extra`
    (the handwriting set's training samples) fills `config.handwriting_share` of every batch, drawn at
    random from it, over and over; MNIST fills the rest, and an epoch has as many batches as MNIST
    alone would fill, so the mix costs no time."""
    examples = _examples(split, config, training, shard)
    batch_size = config.batch_size
    if shard is not None:
        batch_size = shard.get_per_replica_batch_size(config.batch_size)
    augment = training and config.augment
    if not (training and extra is not None and config.handwriting_share > 0):
        if shard is not None:
            examples = examples.repeat()
        ds = _model_batches(examples, batch_size, Augmentation() if augment else None, shard is not None)
        return ds.prefetch(tf.data.AUTOTUNE)
    # Each part batched and augmented apart, then joined: no per-example sampling, every batch mixed
    # alike, and the elastic wobble only for the set's drawn and typeset digits (MNIST's are real hands).
    from_set = max(1, round(batch_size * config.handwriting_share))
    mnist = _model_batches(examples.repeat(), batch_size - from_set, Augmentation() if augment else None)
    handwriting = _model_batches(
        _examples(extra, config, True, shard).repeat(),
        from_set,
        Augmentation(elastic_prob=ELASTIC_ON_THE_SET) if augment else None,
    )
    ds = tf.data.Dataset.zip(mnist, handwriting).map(
        lambda first, second: tuple(tf.concat(pair, 0) for pair in zip(first, second, strict=True))
    )
    if shard is None:  # endless: an epoch is as many batches as MNIST alone fills
        ds = ds.take(epoch_batches(len(split), config))
    return ds.prefetch(tf.data.AUTOTUNE)


def _model_batches(
    examples: tf.data.Dataset, size: int, augmentation: Augmentation | None, drop_remainder: bool = False
) -> tf.data.Dataset:
    """Batches of `size` as the model takes them (float images, one-hot labels), augmented if asked."""
    ds = examples.batch(size, drop_remainder=drop_remainder).map(
        lambda x, y: (to_model_input(x), tf.one_hot(y, 10)), num_parallel_calls=tf.data.AUTOTUNE
    )
    if augmentation is not None:
        ds = ds.map(lambda x, y: (augment_batch(x, augmentation), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds


def epoch_batches(examples: int, config: TrainConfig) -> int:
    return int(np.ceil(examples / config.batch_size))


def _examples(
    split: Split, config: TrainConfig, training: bool, shard: tf.distribute.InputContext | None
) -> tf.data.Dataset:
    """A split's (image, label) pairs: this worker's share of them, cached, shuffled when training."""
    ds = tf.data.Dataset.from_tensor_slices((split.images, split.labels))
    if shard is not None:
        ds = ds.shard(shard.num_input_pipelines, shard.input_pipeline_id)
    ds = ds.cache()
    if training:
        ds = ds.shuffle(len(split), seed=config.seed, reshuffle_each_iteration=True)
    return ds


def learning_rate(
    config: TrainConfig, steps_per_epoch: int
) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warm-up to the peak, then a cosine decay to zero at the last planned epoch."""
    warmup_steps = min(config.warmup_epochs, config.epochs - 1) * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate / 10 if warmup_steps else config.learning_rate,
        decay_steps=max(1, config.epochs * steps_per_epoch - warmup_steps),
        warmup_target=config.learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def compiled(model: keras.Model, optimizer: keras.optimizers.Optimizer | str = "adam") -> keras.Model:
    """The model with the project's loss and metrics: what fit trains with and evaluate reports."""
    model.compile(
        optimizer=optimizer,
        loss="categorical_crossentropy",
        metrics=["accuracy", keras.metrics.Recall(name="recall")],
    )
    return model


class EpochReport(keras.callbacks.Callback):
    """A progress bar per epoch on a terminal, one line per epoch otherwise; progress.json always."""

    def __init__(
        self, progress: RunProgress | None, epochs: int, steps: int, stream: TextIO = sys.stderr
    ) -> None:
        """`progress` None: a worker other than the chief, which writes nothing into the model directory."""
        super().__init__()
        self.progress, self.epochs, self.steps, self.stream = progress, epochs, steps, stream
        self.history: dict[str, list[float]] = {key: [] for key in (*HISTORY_KEYS, "epoch_seconds")}
        self.bar: tqdm | None = None
        self.started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.monotonic()
        if self.stream.isatty():
            self.bar = tqdm(
                total=self.steps,
                desc=f"epoch {epoch + 1}/{self.epochs}",
                unit="batch",
                leave=False,
                file=self.stream,
                dynamic_ncols=True,
            )

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if logs and batch % 20 == 0:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}", acc=f"{float(logs['accuracy']):.4f}")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        logs = logs or {}
        for key in HISTORY_KEYS:
            self.history[key].append(float(logs[key]))
        self.history["epoch_seconds"].append(round(time.monotonic() - self.started, 3))
        if self.progress is not None:
            self.progress.epoch_done(epoch + 1, self.history)
        print(
            f"epoch {epoch + 1}/{self.epochs}  loss {logs['loss']:.4f}  acc {logs['accuracy']:.2%}  "
            f"val_loss {logs['val_loss']:.4f}  val_acc {logs['val_accuracy']:.2%}  "
            f"{self.history['epoch_seconds'][-1]:.1f}s",
            file=self.stream,
            flush=True,
        )


def train(
    config: TrainConfig,
    data: Mnist,
    progress: RunProgress,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> Trained:
    """Train `config.arch` and return it with the best validation epoch's weights restored.

    `extra_callbacks` run after the report (the benchmark uses one to time test accuracy per epoch).
    """
    keras.utils.set_random_seed(config.seed)
    # The same seed gives the same model, bit for bit: on CPU this costs next to nothing here.
    tf.config.experimental.enable_op_determinism()
    extra = data.handwriting.train if data.handwriting is not None else None
    train_ds = make_dataset(data.train, config, training=True, extra=extra)
    val_ds = make_dataset(data.val, config, training=False)
    steps = epoch_batches(len(data.train), config)
    model = compiled(build_model(config.arch), keras.optimizers.Adam(learning_rate(config, steps)))
    stopper = early_stopping(config)
    report = EpochReport(progress, config.epochs, steps)
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        callbacks=[stopper, report, *extra_callbacks],
        verbose=0,
        shuffle=False,
    )  # the dataset shuffles itself
    return Trained(model, training_history(report, stopper, config))


def early_stopping(config: TrainConfig) -> keras.callbacks.EarlyStopping:
    """Stop after `config.patience` epochs without a better val_loss; end with the best epoch's weights."""
    return keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.patience, restore_best_weights=True
    )


def training_history(
    report: EpochReport, stopper: keras.callbacks.EarlyStopping, config: TrainConfig
) -> dict[str, Any]:
    """The history artefact: every epoch's figures, the best epoch, and whether training stopped early."""
    epochs_run = len(report.history["loss"])
    return {
        "epochs": list(range(1, epochs_run + 1)),
        **report.history,
        "best_epoch": stopper.best_epoch + 1,
        "stopped_early": epochs_run < config.epochs,
    }
