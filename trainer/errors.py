"""Errors of the export step that `python -m trainer` reports in one line, kept apart from export.py so
the command can name them without importing TensorFlow."""


class ExportError(Exception):
    """The trained model cannot be published as it is (no version is exported)."""


class InterruptedAfterExport(KeyboardInterrupt):
    """Ctrl-C or SIGTERM came once the version was published: the run is interrupted, the version stays."""

    def __init__(self, version: int) -> None:
        super().__init__(version)
        self.version = version
