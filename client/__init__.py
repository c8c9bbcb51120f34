"""The client library every consumer of the model server shares: calls, and image normalisation.

Its names load on first use (PEP 562), so that the `mnist` command (client/__main__.py) is running
before numpy, gRPC and Pillow load."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from client.api import Prediction, ServingClient, ServingClientError, VersionStatus
    from client.decode import ImageError, Limits
    from client.normalise import Normalised, normalise_bytes, normalise_image

_MODULES = {
    "Prediction": "client.api",
    "ServingClient": "client.api",
    "ServingClientError": "client.api",
    "VersionStatus": "client.api",
    "ImageError": "client.decode",
    "Limits": "client.decode",
    "Normalised": "client.normalise",
    "normalise_bytes": "client.normalise",
    "normalise_image": "client.normalise",
}
__all__ = [
    "ImageError",
    "Limits",
    "Normalised",
    "Prediction",
    "ServingClient",
    "ServingClientError",
    "VersionStatus",
    "normalise_bytes",
    "normalise_image",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module 'client' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULES[name]), name)
