"""What every transport of the client shares: how a failed call is reported, a version's status,
and the calls a transport makes (client/rest_transport.py, client/grpc_transport.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """A server's words with their control characters escaped: one line, no escape sequence."""
    return _CONTROL.sub(lambda found: repr(found[0])[1:-1], text)


class ServingClientError(Exception):
    """The server's answer to a failed call (or why there was none): a status name and its message,
    control characters escaped (a server's message reaches a terminal: no escape sequence, one line)."""

    def __init__(self, status: str, message: str) -> None:
        message = printable(message)
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: str
    error_code: str
    error_message: str


class Transport:
    """How a call reaches the server; answers (probabilities [n, 10], version that answered)."""

    def predict(
        self, images: np.ndarray, model: str, version: int | None, label: str | None, timeout: float
    ) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def status(self, model: str, version: int | None, timeout: float) -> list[VersionStatus]:
        raise NotImplementedError

    def metadata(self, model: str, version: int | None, label: str | None, timeout: float) -> dict:
        raise NotImplementedError
