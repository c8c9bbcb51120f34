"""The trainer's command line: which runs to make, the checks that are cheap, then trainer/pipeline.py.

python -m trainer                              # the `plus` network into models/mnist/<max+1>
python -m trainer --arch seed                  # the original project's network
python -m trainer --arch seed --limit 6000 --epochs 2   # a quick model (about 93%) to try things with
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from cliargs import OneLineParser
from contract import model_dir
from contract.tflite_metadata import predates_tflite_signatures
from tfquiet import import_tensorflow
from trainer.cluster import ClusterError, TfConfigError, check_own_port, cluster_from_env
from trainer.config import RECIPES, TrainConfig
from trainer.data import DataError, load_mnist
from trainer.errors import INTERRUPT_REQUESTED, ExportError, InterruptedAfterExport

EXAMPLES = """examples:
  python -m trainer                            train `plus` (the default) into models/mnist/<max+1>
  python -m trainer --arch seed                the original network, its tuned recipe
  python -m trainer --arch seed --limit 6000 --epochs 2
                                               a quick model to try the platform with: about 93%
                                               accurate in seconds (the default `plus` needs more
                                               data and epochs than that to be any good)
  python -m trainer --model-dir /tmp/models --model-name digits
  TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]},
             "task": {"type": "worker", "index": 0}}' python -m trainer
                                               worker 0 of two; the other runs the same with index 1
  python -m trainer --skip-if-trained          a one-shot job: train only if there is no version yet
                                               (RETRAIN=1 in the environment trains anyway)
"""


DEFAULTS = TrainConfig()  # the flags' defaults are the config's: one place
# `--quick-first`'s model, and the quick run the examples offer: `seed` on a tenth of the data, twice.
QUICK_RUN = {"limit": 6000, "epochs": 2}


class UsageError(Exception):
    """The run cannot start: a bad flag value or an unusable model directory."""


def _whole_number(low: int, high: int, word: str) -> Callable[[str], int]:
    """A flag type for a whole number in [low, high], named `word` in errors."""

    def parse(text: str) -> int:
        value = int(text) if re.fullmatch(r"\s*-?[0-9]{1,20}\s*", text) else None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {word}, got {text!r}")
        return value

    return parse


_positive_int = _whole_number(1, 1_000_000, "a positive whole number up to 1,000,000")
_seed = _whole_number(0, 2**32 - 1, "a whole number from 0 to 4294967295")


def _up_to_half(word: str, zero_allowed: bool) -> Callable[[str], float]:
    """A flag type for a number in (0, 0.5], or [0, 0.5] where 0 means none, named `word` in errors."""
    interval = "[0, 0.5]" if zero_allowed else "(0, 0.5]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        above_low = value >= 0.0 if zero_allowed else value > 0.0
        if not above_low or value > 0.5:
            raise argparse.ArgumentTypeError(f"expected a {word} in {interval}, got {text!r}")
        return value

    return parse


_fraction = _up_to_half("fraction", zero_allowed=False)
_share = _up_to_half("share", zero_allowed=True)


def _path(text: str) -> Path:
    """A path flag's value: an empty one would be the current directory, unasked for."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty one")
    return Path(text)


MAX_MODEL_NAME = 255  # a folder's name, in bytes, on the file systems a model directory lives on


def _model_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", text):
        raise argparse.ArgumentTypeError(f"expected letters, digits, '_', '.' or '-', got {text!r}")
    if len(text) > MAX_MODEL_NAME:
        raise argparse.ArgumentTypeError(
            f"a model name is a folder's name: at most {MAX_MODEL_NAME} characters"
        )
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(
        prog="python -m trainer",
        description="Train the MNIST CNN and export it as the next SavedModel version.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--arch",
        choices=sorted(RECIPES),
        default=DEFAULTS.arch,
        help=f"seed: the original network; plus: stronger, for real uploads (default {DEFAULTS.arch})",
    )
    parser.add_argument("--epochs", type=_positive_int, help="cap on epochs (default: the arch's recipe)")
    parser.add_argument("--batch-size", type=_positive_int, help="default: the arch's recipe")
    parser.add_argument("--limit", type=_positive_int, help="train on the first N training images only")
    parser.add_argument(
        "--patience",
        type=_positive_int,
        help="epochs without a better val_loss before stopping (default: the arch's recipe: seed 4, plus 14)",
    )
    parser.add_argument(
        "--handwriting-share",
        type=_share,
        help="share of each batch from data/handwriting (default: the arch's recipe: seed 0, plus 0.25)",
    )
    # Flags whose defaults are the config's fields: written once, in TrainConfig.
    for field_name, kind, meaning in (
        ("val_split", _fraction, "share of the training images held out for validation"),
        ("seed", _seed, "makes runs repeatable"),
        ("data_dir", _path, "the four MNIST IDX files"),
        ("model_dir", _path, "where models are written"),
        ("model_name", _model_name, "versions go to MODEL_DIR/MODEL_NAME/<N>"),
    ):
        default = getattr(DEFAULTS, field_name)
        flag = "--" + field_name.replace("_", "-")
        parser.add_argument(flag, type=kind, default=default, help=f"{meaning} (default {default})")
    parser.add_argument(
        "--skip-if-trained",
        action="store_true",
        help="exit 0 at once when the model already has a version, unless RETRAIN=1 is set",
    )
    parser.add_argument(
        "--quick-first",
        action="store_true",
        help="when the model has no version yet, first export a quick `seed` model (about 93%% in "
        "seconds) so there is something to serve, then train the one asked for as the next version",
    )
    parser.add_argument(
        "--worker-timeout",
        type=_positive_int,
        default=120,
        help="with TF_CONFIG (several workers): seconds the workers may take to find each other before "
        "each gives up (default 120)",
    )
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's own logging")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 100:
        parser.error(f"argument --limit: expected at least 100 images, got {args.limit}")
    return args


# A version is about 3 MB (SavedModel, model.tflite, warm-up), written beside a staging copy, with the
# checkpoints of a run across workers: a disk with less free fails the export after the whole training.
MIN_FREE_BYTES = 32 << 20


def check_writable(base_path: Path) -> None:
    """Fail before training, not after it, when the model directory cannot take a version: one that
    cannot be written, whose name is not text (the export writes it into text files), on a disk with
    too little room, or that holds the highest version a server reads already."""
    try:
        str(base_path).encode()
    except UnicodeEncodeError:
        raise UsageError(f"the model directory's name is not UTF-8 text: {str(base_path)!r}") from None
    try:
        base_path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=base_path):
            pass
    except OSError as err:
        raise UsageError(f"cannot write to model directory {base_path}: {err.strerror}") from None
    free = shutil.disk_usage(base_path).free
    if free < MIN_FREE_BYTES:
        raise UsageError(
            f"only {free / 1e6:.1f} MB free on the disk holding {base_path}: a version takes a few MB, and "
            f"its checkpoints and staging more; free {MIN_FREE_BYTES >> 20} MB or more"
        )
    try:
        model_dir.next_version(base_path)
    except model_dir.NoVersionLeft as err:
        raise UsageError(str(err)) from None


def check_batches(run: TrainConfig, training_images: int) -> None:
    """A batch the data can fill, with room for both parts when the handwriting set is mixed in:
    a batch of 1 left MNIST no image, and one past the data took 13 GB before it failed."""
    if run.batch_size > training_images:
        raise UsageError(
            f"--batch-size {run.batch_size} is more than the {training_images} training images: "
            "use a smaller one"
        )
    if run.handwriting_share > 0 and run.batch_size * (1 - run.handwriting_share) < 1:
        raise UsageError(
            f"--batch-size {run.batch_size} leaves no MNIST image beside the handwriting set's share "
            f"({run.handwriting_share:g}): use 2 or more"
        )


def planned_runs(args: argparse.Namespace) -> list[TrainConfig]:
    """The runs to make, in order: none when --skip-if-trained finds a version to serve; a quick
    `seed` model first when --quick-first finds none."""
    base_path = args.model_dir / args.model_name
    existing = model_dir.versions(base_path)
    servable = bool(existing) and not predates_tflite_signatures(base_path / str(existing[-1]))
    retrain = os.environ.get("RETRAIN", "").strip().lower() in ("1", "true", "yes", "on")
    if args.skip_if_trained and existing and not retrain:
        if servable:
            print(f"{base_path} already has version {existing[-1]}: not training (RETRAIN=1 trains another)")
            return []
        print(
            f"version {existing[-1]} predates model.tflite's signature metadata, without which TF Serving "
            "cannot serve it: training another"
        )
    config = TrainConfig.for_arch(
        args.arch,
        **{name: getattr(args, name) for name in ("epochs", "batch_size", "val_split", "patience", "seed")},
        **{name: getattr(args, name) for name in ("limit", "data_dir", "model_dir", "model_name")},
        handwriting_share=args.handwriting_share,
        # The handwriting set lives beside MNIST's files (data/handwriting beside data/mnist), wherever
        # --data-dir puts them; it used to be looked for under the working directory whatever the flag.
        handwriting_file=args.data_dir.parent
        / DEFAULTS.handwriting_file.relative_to(DEFAULTS.data_dir.parent),
    )
    if not args.quick_first or servable:
        return [config]
    places = {
        name: getattr(config, name)
        for name in ("data_dir", "handwriting_file", "model_dir", "model_name", "seed")
    }
    return [replace(TrainConfig.for_arch("seed", **QUICK_RUN), **places), config]


def data_of(run: TrainConfig) -> tuple[Path, float, int, int | None, Path | None]:
    """load_mnist's arguments for a run: the handwriting set when the run mixes it in (then it must be
    there), else when it is there, for its dev sources' figures."""
    wanted = run.handwriting_share > 0 or run.handwriting_file.is_file()
    handwriting = run.handwriting_file if wanted else None
    return run.data_dir, run.val_split, run.seed, run.limit, handwriting


def _interrupt(signum: int, frame: object) -> None:
    """Ctrl-C and SIGTERM: KeyboardInterrupt where the run is, noted where the export will look."""
    INTERRUPT_REQUESTED.set()
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """The run's exit status. However it ends, another Ctrl-C or SIGTERM after that ends the process
    at once, as a signal does: Python's shutdown (TensorFlow's own clean-up) is no place for a
    KeyboardInterrupt, which printed a traceback there."""
    try:
        return _main(argv)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)


def _main(argv: list[str] | None) -> int:
    signal.signal(signal.SIGINT, _interrupt)  # Ctrl-C is KeyboardInterrupt from here on
    # SIGTERM (docker stop, a supervisor) ends a run as Ctrl-C does: cleanly, exporting nothing, or,
    # once the version is renamed into place, keeping it (trainer/pipeline.py).
    signal.signal(signal.SIGTERM, _interrupt)
    exported: list[int] = []
    try:
        args = parse_args(argv)
        runs = planned_runs(args)
        cluster = cluster_from_env()
        if cluster is not None:
            check_own_port(cluster)
        if cluster is not None and len(runs) > 1:
            raise UsageError("--quick-first trains alone: leave it out when TF_CONFIG names several workers")
        # What is cheap to check is checked before TensorFlow is imported (seconds).
        loaded = [(run, load_mnist(*data_of(run))) for run in runs]
        for run, data in loaded:
            check_batches(run, len(data.train))
        if runs and (cluster is None or cluster.is_chief):
            check_writable(runs[0].base_path)
        if not args.verbose:
            # Errors reach the user as one line of ours. TensorFlow's C++ side would add its own: a
            # screenful for a peer's failure, and a line about tf.data's rewrite of the mixed
            # dataset under op determinism (an attribute this build does not know), which is harmless.
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        import_tensorflow(args.verbose)
        from trainer import pipeline  # TensorFlow's modules, once the checks above have passed

        for config, data in loaded:
            version = pipeline.run(config, data, cluster, args.worker_timeout)
            if version is not None:
                exported.append(version)
    except (DataError, UsageError, TfConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (ExportError, ClusterError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # the file system failed us past the checks (a full disk, a permission)
        print(f"error: {err.strerror or err}{f': {err.filename}' if err.filename else ''}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        if isinstance(err, InterruptedAfterExport):
            exported.append(err.version)
        done = (
            f"version {exported[-1]} was exported, nothing after it"
            if exported
            else "no version was exported"
        )
        print(f"interrupted: {done}", file=sys.stderr)
        return 130
    return 0
