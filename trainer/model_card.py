"""`model_card.json`: what made a version, so any version can be explained and reproduced."""

from __future__ import annotations

import platform
from typing import Any

import keras
import tensorflow as tf

from trainer.config import TrainConfig
from trainer.data import Mnist
from trainer.progress import utc_now


def model_card(
    config: TrainConfig,
    data: Mnist,
    model: keras.Model,
    wall_s: float,
    run_id: str,
    workers: int = 1,
    strategy: str = "none",
    resumed_after_epoch: int | None = None,
) -> dict[str, Any]:
    """`workers` and `strategy`: how many tf.distribute workers trained it, under which strategy;
    `resumed_after_epoch`: the epoch of the backup a restarted run went on from (its wall time is
    the restarted run's alone)."""
    return {
        "architecture": config.arch,
        "hyperparameters": config.hyperparameters(),
        "seed": config.seed,
        "parameters": int(model.count_params()),
        "data_sha256": data.checksums,
        "train_size": len(data.train),
        "val_size": len(data.val),
        "test_size": len(data.test),
        "handwriting": None
        if data.handwriting is None or config.handwriting_share == 0
        else {
            "share_of_batches": config.handwriting_share,
            "sha256": data.handwriting.sha256,
            "train_samples": len(data.handwriting.train),
            "dev_samples": len(data.handwriting.dev),
            "samples_per_source": data.handwriting.counts,
        },
        "wall_time_s": round(wall_s, 1),
        "resumed_after_epoch": resumed_after_epoch,
        "workers": workers,
        "strategy": strategy,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "python_version": platform.python_version(),
        "run_id": run_id,
        "created_at": utc_now(),
    }
