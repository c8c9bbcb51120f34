"""The peer of bench/peers.py: Triton's Python backend running the same model.tflite in LiteRT.

Copied into a Triton model repository as `<model>/1/model.py` and run by Triton's backend stub (in
.venv-peers' Python, never ours). Triton's dynamic batcher hands each instance a list of requests; they
are run as one batch, as our server runs a batch, and the batch's rows go back to their requests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]  # only inside Triton
from ai_edge_litert.interpreter import Interpreter

SIGNATURE = "serving_default"


class TritonPythonModel:
    """One instance: one single-threaded LiteRT interpreter, resized when the batch size changes."""

    def initialize(self, args: dict[str, str]) -> None:
        path = Path(args["model_repository"]) / args["model_version"] / "model.tflite"
        self.interpreter = Interpreter(model_path=str(path), num_threads=1)
        self.interpreter.allocate_tensors()
        runner = self.interpreter.get_signature_runner(SIGNATURE)
        self.input = runner.get_input_details()["images"]["index"]
        outputs = runner.get_output_details()
        self.probabilities, self.classes = outputs["probabilities"]["index"], outputs["classes"]["index"]
        self.shape: tuple[int, ...] = ()

    def execute(self, requests: list[Any]) -> list[Any]:
        arrays = [pb_utils.get_input_tensor_by_name(r, "images").as_numpy() for r in requests]
        batch = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        if batch.shape != self.shape:
            self.interpreter.resize_tensor_input(self.input, batch.shape, strict=False)
            self.interpreter.allocate_tensors()
            self.shape = batch.shape
        self.interpreter.set_tensor(self.input, batch)
        self.interpreter.invoke()
        probabilities = self.interpreter.get_tensor(self.probabilities)
        classes = self.interpreter.get_tensor(self.classes)
        answers, start = [], 0
        for array in arrays:
            rows = slice(start, start + len(array))
            start += len(array)
            answers.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("probabilities", probabilities[rows]),
                        pb_utils.Tensor("classes", classes[rows]),
                    ]
                )
            )
        return answers
