"""TensorFlow for the server, loaded the first time a SavedModel needs it, never for model.tflite files.

The thread flags (--tensorflow_intra_op_parallelism, --tensorflow_inter_op_parallelism) must reach
TensorFlow before its first op runs, so they are set here, once, as it is loaded.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass

import grpc

from serving.errors import ServingError
from tfquiet import import_tensorflow


@dataclass(frozen=True)
class Threads:
    intra_op: int = 0  # 0: TensorFlow's own choice
    inter_op: int = 0
    verbose: bool = False  # TensorFlow's start-up chatter shown


_settings = Threads()
_lock = threading.Lock()


def configure(threads: Threads) -> None:
    """The settings TensorFlow gets when it loads (the server's flags; set before any model loads)."""
    global _settings
    _settings = threads


def load() -> None:
    """Import TensorFlow quietly with the configured threads, unless it is loaded already; a
    ServingError that says what to do where it is not installed."""
    with _lock:
        if "tensorflow" in sys.modules:
            return
        try:
            import_tensorflow(_settings.verbose)
        except ImportError:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this server has no TensorFlow to run a SavedModel: it serves versions with a model.tflite "
                "(--prefer_tflite_model); run the image with TensorFlow (the Dockerfile's `serving` stage, "
                "pip's `serving` extra) for this one",
            ) from None
        import tensorflow as tf

        # Before the first op runs: a model call uses every core, and calls do not compete for them.
        tf.config.threading.set_intra_op_parallelism_threads(_settings.intra_op)
        tf.config.threading.set_inter_op_parallelism_threads(_settings.inter_op)
