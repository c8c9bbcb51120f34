"""Train the MNIST CNN and export it as the next version of the model directory.

python -m trainer                              # the `plus` network into models/mnist/<max+1>
python -m trainer --arch seed                  # the original project's network
python -m trainer --arch seed --limit 6000 --epochs 2   # a quick model (about 93%) to try things with
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from contract import model_dir
from contract.signature import scale_pixels
from contract.tflite_metadata import predates_tflite_signatures
from tfquiet import import_tensorflow
from trainer.cluster import Cluster, ClusterError, TfConfigError, cluster_from_env
from trainer.config import RECIPES, TrainConfig
from trainer.data import DataError, load_mnist
from trainer.errors import ExportError
from trainer.progress import RunProgress, new_run_id

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


def _positive_int(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 0.5:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 0.5], got {text!r}")
    return value


def _model_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", text):
        raise argparse.ArgumentTypeError(f"expected letters, digits, '_', '.' or '-', got {text!r}")
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
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
    # Flags whose defaults are the config's fields: written once, in TrainConfig.
    for field_name, kind, meaning in (
        ("val_split", _fraction, "share of the training images held out for validation"),
        ("patience", _positive_int, "epochs without a better val_loss before stopping"),
        ("seed", int, "makes runs repeatable"),
        ("data_dir", Path, "the four MNIST IDX files"),
        ("model_dir", Path, "where models are written"),
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


def check_writable(base_path: Path) -> None:
    """Fail before training, not after it, when the model directory cannot take a version."""
    try:
        base_path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=base_path):
            pass
    except OSError as err:
        raise UsageError(f"cannot write to model directory {base_path}: {err.strerror}") from None


def run(
    config: TrainConfig,
    verbose: bool = False,
    cluster: Cluster | None = None,
    worker_timeout_s: float = 120.0,
) -> int:
    """Train, evaluate and export; with a `cluster`, this process is one of its workers."""
    started = time.monotonic()
    data = load_mnist(config.data_dir, config.val_split, config.seed, config.limit)
    if cluster is None or cluster.is_chief:
        check_writable(config.base_path)

    if cluster is not None and not verbose:
        # A peer's failure is one line of ours; TensorFlow's C++ side would add a screenful of errors.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # TensorFlow is imported only once the cheap checks have passed.
    import_tensorflow(verbose)
    from trainer.evaluate import test_metrics
    from trainer.export import export_version
    from trainer.model_card import model_card
    from trainer.train import train

    run_id = new_run_id()
    chief = cluster is None or cluster.is_chief
    progress = RunProgress(config.base_path, run_id, config.arch, config.epochs) if chief else None
    group = None
    if cluster is not None:
        from trainer.distributed import STRATEGY, WorkerGroup

        group = WorkerGroup(cluster, worker_timeout_s, progress)
        if not cluster.is_chief:  # trains its share, writes nothing, and waits for the export
            group.train(config, data, None)
            if not group.agree_on_export(False):
                raise ClusterError(f"{cluster.me}: worker 0 exported no version (see its output)")
            print(f"{cluster.me} of {len(cluster.workers)}: trained; worker 0 exported the version")
            return 0
    assert progress is not None  # the chief's, or a lone trainer's
    trained_everywhere = False
    try:
        if group is None:
            trained, workers, strategy = train(config, data, progress), 1, "none"
        else:
            trained = group.train(config, data, progress)
            trained_everywhere = True  # the others now wait for this worker's word on the export
            workers, strategy = len(group.cluster.workers), STRATEGY
        metrics = test_metrics(trained.model, data.test)
        card = model_card(config, data, trained.model, time.monotonic() - started, run_id, workers, strategy)
        artefacts = {
            model_dir.HISTORY: trained.history,
            model_dir.METRICS: metrics,
            model_dir.MODEL_CARD: card,
        }
        warmup = scale_pixels(data.test.images[:8])
        version, path = export_version(
            trained.model, config.base_path, config.model_name, artefacts, warmup, run_id
        )
    except BaseException as err:
        progress.failed(
            "interrupted" if isinstance(err, KeyboardInterrupt) else f"{type(err).__name__}: {err}"
        )
        if group is not None and trained_everywhere:  # tell the others: nothing exported
            with contextlib.suppress(ClusterError):  # this worker's own error is the one to report
                group.agree_on_export(False)
        raise
    if group is not None:
        try:
            group.agree_on_export(True)
        except ClusterError as err:  # the version is published all the same; a peer missed the news
            print(f"warning: {err}", file=sys.stderr)
    progress.done(version)
    if group is not None:
        from trainer.distributed import remove_backup

        remove_backup(config)
    minutes, seconds = divmod(int(time.monotonic() - started), 60)
    print(
        f"exported {config.model_name} version {version} ({config.arch}): test accuracy "
        f"{metrics['accuracy']:.2%}, recall {metrics['recall']:.2%}, loss {metrics['loss']:.4f} "
        f"in {minutes}m{seconds:02d}s -> {path}"
    )
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (docker stop, a supervisor) ends a run as Ctrl-C does: cleanly, with no version exported.
    signal.signal(signal.SIGTERM, _interrupt)
    base_path = args.model_dir / args.model_name
    existing = model_dir.versions(base_path)
    stale = bool(existing) and predates_tflite_signatures(base_path / str(existing[-1]))
    if args.skip_if_trained and existing and os.environ.get("RETRAIN") != "1":
        if not stale:
            print(f"{base_path} already has version {existing[-1]}: not training (RETRAIN=1 trains another)")
            return 0
        print(
            f"version {existing[-1]} predates model.tflite's signature metadata, without which TF Serving "
            "cannot serve it: training another"
        )
    config = TrainConfig.for_arch(
        args.arch,
        epochs=args.epochs,
        batch_size=args.batch_size,
        val_split=args.val_split,
        patience=args.patience,
        seed=args.seed,
        limit=args.limit,
        data_dir=args.data_dir,
        model_dir=args.model_dir,
        model_name=args.model_name,
    )
    configs = [config]
    if args.quick_first and (not existing or stale):  # nothing the server can serve yet
        configs.insert(
            0,
            replace(
                TrainConfig.for_arch("seed", **QUICK_RUN),
                data_dir=config.data_dir,
                model_dir=config.model_dir,
                model_name=config.model_name,
                seed=config.seed,
            ),
        )
    try:
        cluster = cluster_from_env()
        if cluster is not None and len(configs) > 1:
            raise UsageError("--quick-first trains alone: leave it out when TF_CONFIG names several workers")
        for each in configs:
            run(each, args.verbose, cluster, args.worker_timeout)
        return 0
    except (DataError, UsageError, TfConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (ExportError, ClusterError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: no version was exported", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
