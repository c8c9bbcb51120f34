"""Test-set figures for `metrics.json`, computed once here so no reader has to recompute them."""

from __future__ import annotations

import base64
from typing import Any

import keras
import numpy as np

from contract import model_dir
from contract.signature import DIGITS, scale_pixels
from trainer.data import Split

GALLERY_SIZE = 100


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """10x10 counts, rows the true digit, columns the predicted one."""
    return np.bincount(labels * 10 + predicted, minlength=100).reshape(10, 10)


def per_class(confusion: np.ndarray) -> list[dict[str, float | int]]:
    true_positives = np.diag(confusion).astype(float)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    precision = np.divide(true_positives, predicted, out=np.zeros(10), where=predicted > 0)
    recall = np.divide(true_positives, actual, out=np.zeros(10), where=actual > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros(10), where=both > 0)
    return [
        {
            "digit": digit,
            "precision": float(precision[digit]),
            "recall": float(recall[digit]),
            "f1": float(f1[digit]),
            "support": int(actual[digit]),
        }
        for digit in range(10)
    ]


def test_metrics(model: keras.Model, test: Split, batch_size: int = 1000) -> dict[str, Any]:
    """Keras's loss/accuracy/recall (the original's figures) plus the confusion and the mistakes."""
    x = scale_pixels(test.images)
    y = keras.utils.to_categorical(test.labels, len(DIGITS))
    scores = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
    probabilities = model.predict(x, batch_size=batch_size, verbose=0)
    predicted = probabilities.argmax(axis=1)
    confusion = confusion_matrix(test.labels.astype(np.int64), predicted)
    return {
        "loss": float(scores["loss"]),
        "accuracy": float(scores["accuracy"]),
        "recall": float(scores["recall"]),
        "test_images": len(test),
        "confusion_matrix": confusion.tolist(),
        "per_class": per_class(confusion),
        "misclassified": misclassified(test, probabilities, predicted),
    }


def source_metrics(model: keras.Model, sources: dict[str, Split], batch_size: int = 1000) -> dict[str, Any]:
    """Accuracy on each source of digits (MNIST's test set, the handwriting set's dev sources), with
    its most confident misses' pixels: where the model reads one kind of writing worse than another."""
    found: dict[str, Any] = {}
    for name, split in sources.items():
        probabilities = model.predict(scale_pixels(split.images), batch_size=batch_size, verbose=0)
        predicted = probabilities.argmax(axis=1)
        found[name] = {
            "accuracy": float((predicted == split.labels).mean()),
            "images": len(split),
            "misses": misclassified(split, probabilities, predicted)[: model_dir.SOURCE_MISSES],
        }
    return found


def misclassified(test: Split, probabilities: np.ndarray, predicted: np.ndarray) -> list[dict[str, Any]]:
    """Every mistake, most confident first; the first GALLERY_SIZE carry their pixels (base64 of the
    784 bytes) so the dashboard can show them without the dataset."""
    wrong = np.flatnonzero(predicted != test.labels)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")]
    entries: list[dict[str, Any]] = []
    for rank, i in enumerate(wrong):
        entry: dict[str, Any] = {
            "index": int(i),
            "label": int(test.labels[i]),
            "predicted": int(predicted[i]),
            "confidence": float(probabilities[i, predicted[i]]),
        }
        if rank < GALLERY_SIZE:
            entry["pixels"] = base64.b64encode(test.images[i].tobytes()).decode()
        entries.append(entry)
    return entries
