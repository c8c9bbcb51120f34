"""Errors of the export step that `python -m trainer` reports in one line, kept apart from export.py so
the command can name them without importing TensorFlow."""

import threading

# Set by the trainer's Ctrl-C and SIGTERM handler (trainer/cli.py) as it raises KeyboardInterrupt. The
# exception may land in a __del__ (TensorFlow's clean-up while a version is written), where Python
# drops it with a traceback and the run went on to publish: the export looks here before it does.
INTERRUPT_REQUESTED = threading.Event()


class ExportError(Exception):
    """The trained model cannot be published as it is (no version is exported)."""


class InterruptedAfterExport(KeyboardInterrupt):
    """Ctrl-C or SIGTERM came once the version was published: the run is interrupted, the version stays."""

    def __init__(self, version: int) -> None:
        super().__init__(version)
        self.version = version
