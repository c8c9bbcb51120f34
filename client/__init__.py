"""The client library every consumer of the model server shares: calls, and image normalisation."""

from client.api import Prediction, ServingClient, ServingClientError, VersionStatus
from client.normalise import ImageError, Limits, Normalised, normalise_bytes, normalise_image

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
