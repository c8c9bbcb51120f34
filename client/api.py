"""One typed client for a TF Serving API, over gRPC (the default) or REST, for ours and the real one.

    client = ServingClient.grpc("localhost:8500")        # or ServingClient.rest("http://localhost:8501")
    for answer in client.predict(images):                 # float32 [n, 28, 28, 1] or [28, 28, 1]
        print(answer.digit, answer.version)

Transient failures (UNAVAILABLE, connection refused, HTTP 503; RESOURCE_EXHAUSTED, HTTP 429, a server
whose request budget is full for now) are retried with exponential backoff;
anything else raises ServingClientError carrying the server's status and message. How a call reaches
the server is a transport's: client/rest_transport.py and client/grpc_transport.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from client.addresses import grpc_target_problem, rest_url_problem
from client.grpc_transport import GrpcTransport
from client.rest_transport import RestTransport
from client.transport import ServingClientError, Transport, VersionStatus, printable
from contract.signature import DIGITS, IMAGE_SHAPE

__all__ = ["Prediction", "ServingClient", "ServingClientError", "Transport", "VersionStatus", "printable"]

DEFAULT_GRPC = "localhost:8500"
# Failures worth another try after a pause: the server is down or restarting, or holds too many
# requests' bytes for now (a request too large for it ever is RESOURCE_EXHAUSTED too, and fails again).
TRANSIENT = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED"})
DEFAULT_REST = "http://localhost:8501"
T = TypeVar("T")


@dataclass(frozen=True)
class Prediction:
    digit: int
    probabilities: tuple[float, ...]
    version: int


def as_batch(images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """float32 [n, 28, 28, 1] from one image or many, grey [28, 28] or [28, 28, 1], ink in [0, 1] as
    the normaliser gives it: 8-bit pixels (0-255) or NaNs would be answered with nonsense, or refused
    by the server after a round trip."""
    batch = np.asarray(images, dtype=np.float32)
    if batch.ndim == 2 or (batch.ndim == 3 and batch.shape[-1] == 1 and batch.shape[0] == IMAGE_SHAPE[0]):
        batch = batch[None]
    if batch.ndim == 3:
        batch = batch[..., None]
    if batch.shape[1:] != IMAGE_SHAPE:
        side = "x".join(map(str, IMAGE_SHAPE[:2]))
        raise ValueError(f"images of shape {batch.shape[1:]}, expected {side} (normalise them first)")
    if not np.isfinite(batch).all():
        raise ValueError("the images hold NaN or infinite values (normalise them first)")
    if batch.size and not (float(batch.min()) >= 0.0 and float(batch.max()) <= 1.0):
        raise ValueError(
            f"pixel values from {batch.min():g} to {batch.max():g}, expected ink in [0, 1] "
            "(8-bit pixels: divide by 255; or normalise the image first)"
        )
    return batch


class ServingClient:
    """Predict, status and metadata over one transport; see `grpc()` and `rest()`."""

    def __init__(
        self, transport: Transport, timeout: float = 10.0, retries: int = 3, backoff: float = 0.2
    ) -> None:
        self.transport, self.timeout, self.retries, self.backoff = transport, timeout, retries, backoff

    @classmethod
    def grpc(cls, target: str = DEFAULT_GRPC, **options: Any) -> ServingClient:
        """A client of the gRPC API at `target`, HOST:PORT (ValueError otherwise: gRPC would take a
        bare host as port 443, and fail only after its retries)."""
        problem = grpc_target_problem(target) if isinstance(target, str) else "takes a str"
        if problem:
            raise ValueError(f"ServingClient.grpc {problem}")
        return cls(GrpcTransport(target), **options)

    @classmethod
    def rest(cls, url: str = DEFAULT_REST, **options: Any) -> ServingClient:
        """A client of the REST API at `url`, http(s)://HOST[:PORT] (ValueError otherwise)."""
        problem = rest_url_problem(url) if isinstance(url, str) else "takes a str"
        if problem:
            raise ValueError(f"ServingClient.rest {problem}")
        return cls(RestTransport(url), **options)

    def _with_retries(self, call: Callable[[], T]) -> T:
        for attempt in range(self.retries + 1):
            try:
                return call()
            except ServingClientError as err:
                if err.status not in TRANSIENT or attempt == self.retries:
                    raise
                time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def predict(
        self,
        images: np.ndarray | Sequence[np.ndarray],
        model: str = "mnist",
        version: int | None = None,
        label: str | None = None,
    ) -> list[Prediction]:
        """One Prediction per image, from the version the spec names (default: the latest)."""
        if version is not None and label is not None:
            raise ValueError("give a version or a label, not both")
        if len(images) == 0:
            return []
        batch = as_batch(images)
        probabilities, answered = self._with_retries(
            lambda: self.transport.predict(batch, model, version, label, self.timeout)
        )
        _check_answer(probabilities, len(batch))
        return [
            Prediction(int(np.argmax(row)), tuple(float(p) for p in row), answered) for row in probabilities
        ]

    def status(self, model: str = "mnist", version: int | None = None) -> list[VersionStatus]:
        return self._with_retries(lambda: self.transport.status(model, version, self.timeout))

    def metadata(self, model: str = "mnist", version: int | None = None, label: str | None = None) -> dict:
        """The model's signatures, as TF Serving's REST API prints them."""
        return self._with_retries(lambda: self.transport.metadata(model, version, label, self.timeout))


def _check_answer(probabilities: np.ndarray, images: int) -> None:
    """Probabilities a server answered for `images` images, refused unless they are one row of one
    per digit for each image, all finite: anything else is a server that is not serving this
    platform's model (or not well), and no digit can be read from it."""
    wanted = (images, len(DIGITS))
    if probabilities.shape != wanted:
        raise ServingClientError(
            "UNKNOWN",
            f"the server answered probabilities of shape {list(probabilities.shape)} for "
            f"{images} image(s), expected {list(wanted)}: is it serving an MNIST model?",
        )
    if not np.isfinite(probabilities).all():
        raise ServingClientError("UNKNOWN", "the server answered NaN or infinite probabilities")
