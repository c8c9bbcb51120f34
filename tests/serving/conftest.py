"""Fixtures for the server's tests: test images and what the SavedModel itself answers for them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tensorflow_serving.apis import predict_pb2

from contract.signature import scale_pixels
from tests.conftest import DATA_DIR
from trainer.data import load_pair


@pytest.fixture(scope="session")
def images() -> np.ndarray:
    """Eight MNIST test images as the signature takes them: float32 [8, 28, 28, 1] in [0, 1]."""
    test = load_pair(DATA_DIR, "t10k", verify=False)
    return scale_pixels(test.images[:8])


@pytest.fixture(scope="session")
def in_process(trained_model_dir: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    """The outputs of version 1's serving_default called in this process: the contract's reference."""
    from tfquiet import import_tensorflow

    import_tensorflow()
    import tensorflow as tf

    signature = tf.saved_model.load(str(trained_model_dir / "mnist" / "1")).signatures["serving_default"]
    return {k: v.numpy() for k, v in signature(images=tf.constant(images)).items()}


def predict_request(images: np.ndarray, name: str = "mnist", **spec: object) -> predict_pb2.PredictRequest:
    """A PredictRequest for `images`, its ModelSpec fields (version=, version_label=, ...) from `spec`."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    import tensorflow as tf

    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
    return request
