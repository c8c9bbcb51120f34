"""Import TensorFlow without its start-up chatter.

TensorFlow 2.21 logs through absl from C++ while it loads (oneDNN, CUDA probing), before any Python
setting can reach it, and TF_CPP_MIN_LOG_LEVEL no longer silences those lines. So the import runs with
file descriptor 2 pointed at /dev/null; Python exceptions still surface once it is restored.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null: C++ libraries' own logging (LiteRT's delegate banner, say)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow(verbose: bool = False) -> None:
    """Load TensorFlow and Keras quietly (or not, with `verbose`) so later imports find them loaded."""
    if verbose or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with stderr_silenced():
        import keras  # noqa: F401
        import tensorflow as tf

        tf.config.list_physical_devices()  # probes for CUDA now, while stderr is silenced

    tf.get_logger().setLevel("ERROR")
