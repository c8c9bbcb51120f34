"""Benchmark: train `seed` and `plus` on all the data and time them to their test accuracy; then `seed`
again with two tf.distribute workers.

    make bench-train        (or: .venv/bin/python bench/train.py [--arch seed] [--workers 2])

Writes bench/results/train.json. `seconds_to_99_15` is the wall time until the test accuracy, measured
at each epoch's end, first reached 99.15% (the original project's figure); the time the benchmark
spends measuring that is taken off every clock, so the figures are the trainer's own. The workers' cell
runs each worker as its own `python -m trainer` process with its TF_CONFIG on loopback ports, as
machines would, and times the whole run: start-up, training, evaluation and export.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tfquiet import import_tensorflow  # noqa: E402

import_tensorflow()
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.machine import describe_machine  # noqa: E402
from contract.signature import scale_pixels  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.data import Split, load_mnist  # noqa: E402
from trainer.evaluate import source_metrics, test_metrics  # noqa: E402
from trainer.progress import RunProgress, new_run_id  # noqa: E402
from trainer.train import train  # noqa: E402

TARGET_ACCURACY = 0.9915
RESULTS = ROOT / "bench" / "results" / "train.json"


class TestAccuracyClock(keras.callbacks.Callback):
    """Test accuracy at every epoch end, against a clock that leaves out its own evaluation time."""

    def __init__(self, test: Split, started: float) -> None:
        super().__init__()
        self.x = scale_pixels(test.images)
        self.y = keras.utils.to_categorical(test.labels, 10)
        self.started = started
        self.own_seconds = 0.0
        self.seconds_to_target: float | None = None
        self.accuracies: list[float] = []

    def elapsed(self) -> float:
        return time.monotonic() - self.started - self.own_seconds

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        at = self.elapsed()
        began = time.monotonic()
        scores = self.model.evaluate(self.x, self.y, batch_size=1000, verbose=0, return_dict=True)
        self.accuracies.append(round(float(scores["accuracy"]), 4))
        if self.seconds_to_target is None and scores["accuracy"] >= TARGET_ACCURACY:
            self.seconds_to_target = round(at, 1)
        self.own_seconds += time.monotonic() - began


def bench_arch(arch: str, scratch: Path) -> dict[str, object]:
    config = TrainConfig.for_arch(arch, model_dir=scratch)
    started = time.monotonic()
    # The handwriting set when the recipe mixes it in (plus), as `python -m trainer` loads it.
    handwriting = ROOT / config.handwriting_file if config.handwriting_share > 0 else None
    data = load_mnist(ROOT / config.data_dir, config.val_split, config.seed, handwriting=handwriting)
    clock = TestAccuracyClock(data.test, started)
    progress = RunProgress(config.base_path, new_run_id(), arch, config.epochs)
    trained = train(config, data, progress, extra_callbacks=[clock])
    metrics = test_metrics(trained.model, data.test)
    dev = None if data.handwriting is None else source_metrics(trained.model, {"dev": data.handwriting.dev})
    return {
        "test_accuracy": round(metrics["accuracy"], 4),
        "test_recall": round(metrics["recall"], 4),
        "test_loss": round(metrics["loss"], 4),
        "epochs": len(trained.history["loss"]),
        "best_epoch": trained.history["best_epoch"],
        "wall_s": round(clock.elapsed(), 1),
        "seconds_per_epoch": round(sum(trained.history["epoch_seconds"]) / len(trained.history["loss"]), 1),
        "seconds_to_99_15": clock.seconds_to_target,
        "test_accuracy_per_epoch": clock.accuracies,
        "handwriting_dev_accuracy": None if dev is None else round(dev["dev"]["accuracy"], 4),
        "recipe": config.hyperparameters(),
    }


def bench_workers(arch: str, count: int, scratch: Path) -> dict[str, object]:
    """`count` trainer processes, one per worker, on loopback ports; figures from the version exported."""
    addresses = [f"127.0.0.1:{_free_port()}" for _ in range(count)]
    model_dir = scratch / f"{arch}-{count}-workers"
    started = time.monotonic()
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "trainer", "--arch", arch, "--model-dir", str(model_dir)],
            cwd=ROOT,
            env={  # as a user's shell has it: without the quieting this process set up for itself
                **{k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
                "TF_CONFIG": json.dumps(
                    {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
                ),
            },
            stdout=subprocess.DEVNULL,
        )
        for index in range(count)
    ]
    if any(worker.wait() for worker in workers):
        raise SystemExit(f"a worker of the {count}-worker run failed")
    wall = time.monotonic() - started
    extra = model_dir / "mnist" / "1" / "assets.extra"
    metrics = json.loads((extra / "metrics.json").read_text())
    history = json.loads((extra / "history.json").read_text())
    card = json.loads((extra / "model_card.json").read_text())
    return {
        "workers": card["workers"],
        "strategy": card["strategy"],
        "test_accuracy": round(metrics["accuracy"], 4),
        "test_recall": round(metrics["recall"], 4),
        "test_loss": round(metrics["loss"], 4),
        "epochs": len(history["loss"]),
        "best_epoch": history["best_epoch"],
        "wall_s": round(wall, 1),
        "seconds_per_epoch": round(sum(history["epoch_seconds"]) / len(history["loss"]), 1),
        "recipe": card["hyperparameters"],
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", choices=("seed", "plus"), action="append", help="default: both")
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="workers of the `seed` multi-worker cell; 0: skip it (default 2)",
    )
    args = parser.parse_args()
    archs = args.arch or ["seed", "plus"]
    # Cells not run now keep their figures, so each cell names the machine it ran on.
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    machine = f"{describe_machine()}, TensorFlow {tf.__version__}"
    with tempfile.TemporaryDirectory() as scratch:
        for arch in archs:
            print(f"== {arch}", file=sys.stderr)
            results[arch] = {**bench_arch(arch, Path(scratch)), "machine": machine}
            print(json.dumps({arch: results[arch]}), flush=True)
        if args.workers > 1:
            cell = f"seed_{args.workers}_workers"
            print(f"== {cell}", file=sys.stderr)
            results[cell] = {**bench_workers("seed", args.workers, Path(scratch)), "machine": machine}
            print(json.dumps({cell: results[cell]}), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
