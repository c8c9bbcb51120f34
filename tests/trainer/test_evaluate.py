"""`metrics.json`'s figures on a six-image example small enough to check by hand.

The model is a Dense softmax layer whose weights are set, not trained: image i has one ink pixel, at flat
position i, and row i of the kernel holds log(p_i), so the model outputs exactly the probabilities p_i the
example chose. Every figure below (loss, accuracy, Keras's recall, the confusion matrix, per-digit
precision/recall/F1, the mistakes in order) is worked out from those six rows.
"""

from __future__ import annotations

import base64
import json
import math

import keras
import numpy as np
import pytest

from contract.signature import scale_pixels

# Not `from trainer.evaluate import test_metrics`: pytest would collect that name as a test.
from trainer import evaluate
from trainer.data import Split

pytestmark = pytest.mark.fast

# (true digit, {digit: probability}); the rest of each row's mass is spread evenly over the other digits.
EXAMPLE: list[tuple[int, dict[int, float]]] = [
    (3, {3: 0.9}),  # right, sure
    (3, {5: 0.6, 3: 0.3}),  # a 3 taken for a 5
    (5, {5: 0.8}),  # right
    (7, {1: 0.95}),  # a 7 taken for a 1, the most confident mistake
    (1, {1: 0.4}),  # right but unsure: counts for accuracy, not for Keras's recall (threshold 0.5)
    (5, {3: 0.45, 5: 0.4}),  # a 5 taken for a 3, the least confident mistake
]
LABELS = np.array([label for label, _ in EXAMPLE], dtype=np.uint8)


def example_probabilities() -> np.ndarray:
    rows = []
    for _, chosen in EXAMPLE:
        rest = (1.0 - sum(chosen.values())) / (10 - len(chosen))
        rows.append([chosen.get(digit, rest) for digit in range(10)])
    return np.array(rows)


def one_pixel_images(count: int) -> np.ndarray:
    """uint8 [count, 28, 28], image i inked (255, so exactly 1.0 to the model) at flat position i only."""
    images = np.zeros((count, 28 * 28), dtype=np.uint8)
    images[np.arange(count), np.arange(count)] = 255
    return images.reshape(count, 28, 28)


def fixed_model(probabilities: np.ndarray) -> keras.Model:
    """A model that answers row i of `probabilities` for the i-th one-pixel image: softmax(log p) = p.
    Compiled as trainer.train compiles the real one, since test_metrics reads those metric names."""
    dense = keras.layers.Dense(10, activation="softmax")
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), dense])
    kernel = np.zeros((28 * 28, 10), dtype=np.float32)
    kernel[: len(probabilities)] = np.log(probabilities)
    dense.set_weights([kernel, np.zeros(10, dtype=np.float32)])
    model.compile(loss="categorical_crossentropy", metrics=["accuracy", keras.metrics.Recall(name="recall")])
    return model


@pytest.fixture(scope="module")
def metrics() -> dict:
    """test_metrics on the example, computed once: Keras's evaluate/predict is the slow part."""
    split = Split(one_pixel_images(len(EXAMPLE)), LABELS)
    return evaluate.test_metrics(fixed_model(example_probabilities()), split)


def test_the_fixed_model_answers_the_chosen_probabilities() -> None:
    """The premise of every other test here: the model's output is the example, not something near it."""
    x = scale_pixels(one_pixel_images(len(EXAMPLE)))
    predicted = fixed_model(example_probabilities()).predict(x, verbose=0)
    np.testing.assert_allclose(predicted, example_probabilities(), rtol=1e-5, atol=1e-7)


def test_overall_figures_are_keras_loss_accuracy_and_thresholded_recall(metrics: dict) -> None:
    """Loss is the mean of -log p(true digit); accuracy counts argmax hits (3 of 6); Keras's Recall on
    one-hot labels counts true digits given more than 0.5 (images 0 and 2 only: 2 of 6)."""
    true_probabilities = [0.9, 0.3, 0.8, 0.05 / 9, 0.4, 0.4]
    assert metrics["loss"] == pytest.approx(sum(-math.log(p) for p in true_probabilities) / 6, rel=1e-5)
    assert metrics["accuracy"] == pytest.approx(3 / 6)
    assert metrics["recall"] == pytest.approx(2 / 6)
    assert metrics["test_images"] == 6


def test_confusion_matrix_rows_are_the_true_digit_and_columns_the_predicted_one(metrics: dict) -> None:
    expected = np.zeros((10, 10), dtype=int)
    for true, predicted in [(3, 3), (3, 5), (5, 5), (7, 1), (1, 1), (5, 3)]:
        expected[true, predicted] += 1
    assert metrics["confusion_matrix"] == expected.tolist()


def test_per_digit_precision_recall_f1_and_support(metrics: dict) -> None:
    """1 is predicted twice (once wrongly, for the 7) and right once: precision 1/2, recall 1, F1 2/3.
    3 and 5 are each predicted twice, right once, and occur twice: 1/2 all round. The one 7 is never
    predicted: everything 0, no division by zero. Digits never seen nor predicted: 0 and support 0."""
    rows = {row["digit"]: row for row in metrics["per_class"]}
    assert list(rows) == list(range(10))
    expected = {
        1: (1 / 2, 1.0, 2 / 3, 1),
        3: (1 / 2, 1 / 2, 1 / 2, 2),
        5: (1 / 2, 1 / 2, 1 / 2, 2),
        7: (0.0, 0.0, 0.0, 1),
    }
    for digit, row in rows.items():
        precision, recall, f1, support = expected.get(digit, (0.0, 0.0, 0.0, 0))
        assert row["precision"] == pytest.approx(precision), digit
        assert row["recall"] == pytest.approx(recall), digit
        assert row["f1"] == pytest.approx(f1), digit
        assert row["support"] == support, digit


def test_mistakes_come_most_confident_first_with_their_pixels(metrics: dict) -> None:
    mistakes = metrics["misclassified"]
    assert [(m["index"], m["label"], m["predicted"]) for m in mistakes] == [(3, 7, 1), (1, 3, 5), (5, 5, 3)]
    assert [m["confidence"] for m in mistakes] == pytest.approx([0.95, 0.6, 0.45], rel=1e-5)
    images = one_pixel_images(len(EXAMPLE))
    for m in mistakes:
        pixels = np.frombuffer(base64.b64decode(m["pixels"]), dtype=np.uint8).reshape(28, 28)
        np.testing.assert_array_equal(pixels, images[m["index"]])


def test_the_figures_are_plain_json(metrics: dict) -> None:
    """They are written to metrics.json as they are: numpy scalars would make json.dumps fail."""
    assert json.loads(json.dumps(metrics)) == metrics


def test_confusion_matrix_counts_pairs_into_the_right_cell() -> None:
    """Asymmetric on purpose: a 9 read as 0 must land in row 9, not row 0."""
    confusion = evaluate.confusion_matrix(np.array([0, 0, 1, 9, 9, 9]), np.array([0, 1, 1, 0, 9, 9]))
    assert confusion.shape == (10, 10) and confusion.sum() == 6
    assert confusion[0, 0] == 1 and confusion[0, 1] == 1 and confusion[1, 1] == 1
    assert confusion[9, 0] == 1 and confusion[0, 9] == 0 and confusion[9, 9] == 2


def test_a_digit_predicted_but_never_present_has_precision_0_and_no_division_by_zero() -> None:
    """Recall of a digit with no support is reported as 0 rather than NaN, so the dashboard's table
    and chart stay numeric."""
    confusion = np.zeros((10, 10), dtype=int)
    confusion[4, 4] = 3
    confusion[4, 8] = 1  # one 4 called an 8; no 8 in the set at all
    rows = evaluate.per_class(confusion)
    assert rows[4] == {"digit": 4, "precision": 1.0, "recall": 0.75, "f1": pytest.approx(6 / 7), "support": 4}
    assert rows[8] == {"digit": 8, "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert all(not math.isnan(row[key]) for row in rows for key in ("precision", "recall", "f1"))


def test_only_the_first_gallery_size_mistakes_carry_pixels_and_ties_keep_test_order() -> None:
    """The gallery cap keeps metrics.json small however bad the model; equal confidences keep the
    test set's order so the file is the same on every run."""
    count = evaluate.GALLERY_SIZE + 5
    labels = np.zeros(count, dtype=np.uint8)
    predicted = np.ones(count, dtype=np.int64)  # every image wrong
    probabilities = np.full((count, 10), 0.05)
    probabilities[:, 1] = 0.55
    probabilities[count - 1, 1] = 0.9  # the last image is the most confident mistake
    images = np.arange(count * 28 * 28, dtype=np.uint64).astype(np.uint8).reshape(count, 28, 28)
    mistakes = evaluate.misclassified(Split(images, labels), probabilities, predicted)
    assert [m["index"] for m in mistakes] == [count - 1, *range(count - 1)]
    assert ["pixels" in m for m in mistakes] == [True] * evaluate.GALLERY_SIZE + [False] * 5
    assert base64.b64decode(mistakes[1]["pixels"]) == images[0].tobytes()


def test_no_mistakes_means_an_empty_list() -> None:
    labels = np.array([2, 7], dtype=np.uint8)
    probabilities = np.eye(10)[[2, 7]]
    mistakes = evaluate.misclassified(Split(one_pixel_images(2), labels), probabilities, np.array([2, 7]))
    assert mistakes == []
