"""`python -m trainer` as a user meets it: quiet output, one-line errors, Ctrl-C leaving no version."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from contract.model_dir import versions
from tests.conftest import DATA_DIR, ROOT, example_commands, run_trainer
from trainer.cli import EXAMPLES, UsageError, check_writable, parse_args
from trainer.export import plain_tf_error


def no_versions(base: Path) -> bool:
    return versions(base) == []


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_help_shows_examples_that_work() -> None:
    result = run_trainer("--help")
    assert result.returncode == 0 and EXAMPLES.strip() in result.stdout
    examples = example_commands(EXAMPLES, "python -m trainer")
    assert len(examples) == 5
    for argv in examples:
        parse_args(argv)  # an example that no longer parses exits here


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--epochs", "0", "expected a positive whole number up to 1,000,000, got '0'"),
        ("--epochs", "9" * 30, "expected a positive whole number up to 1,000,000"),
        ("--seed", "-1", "expected a whole number from 0 to 4294967295, got '-1'"),
        ("--val-split", "0.9", "expected a fraction in (0, 0.5], got '0.9'"),
        ("--arch", "resnet", "invalid choice: 'resnet'"),
        ("--model-name", "../x", "got '../x'"),
        ("--model-name", "m" * 300, "a model name is a folder's name: at most 255 characters"),
        ("--limit", "10", "expected at least 100 images, got 10"),
        ("--model-dir", "", "expected a path, got an empty one"),
        ("--data-dir", " ", "expected a path, got an empty one"),
    ],
)
def test_bad_flag_values_are_one_line_errors(flag: str, value: str, message: str) -> None:
    result = run_trainer(flag, value)
    assert result.returncode == 2 and message in result.stderr
    assert_one_line_error(result, message, "(see python -m trainer --help)")


def test_a_data_folder_that_is_a_file_is_named_so(tmp_path: Path) -> None:
    a_file = tmp_path / "mnist.gz"
    a_file.write_bytes(b"")
    result = run_trainer("--data-dir", str(a_file), "--model-dir", str(tmp_path / "models"))
    assert_one_line_error(result, f"{a_file}: not a folder (the data folder holds the four MNIST IDX files)")


def test_missing_data_file_is_named_before_training(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(DATA_DIR, data)
    (data / "train-images-idx3-ubyte.gz").unlink()
    result = run_trainer("--data-dir", str(data), "--model-dir", str(tmp_path / "models"))
    assert_one_line_error(result, "train-images-idx3-ubyte.gz: data file not found")
    assert no_versions(tmp_path / "models" / "mnist")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ("--arch", "seed", "--batch-size", "1000"),
            "--batch-size 1000 is more than the 180 training images",
        ),
        (("--batch-size", "1"), "--batch-size 1 leaves no MNIST image beside the handwriting set's share"),
    ],
)
def test_batches_the_data_cannot_fill_are_refused_before_training(
    flags: tuple[str, ...], message: str, tmp_path: Path
) -> None:
    """A batch of 1 in `plus` left MNIST no image (a traceback after TensorFlow's import); one past the
    data took 13 GB before it failed."""
    result = run_trainer("--limit", "200", *flags, "--model-dir", str(tmp_path))
    assert_one_line_error(result, message)


def test_a_model_dir_that_cannot_take_a_version_is_refused_before_training(tmp_path: Path) -> None:
    """One that holds the highest version a server reads, and one whose name is not UTF-8 (the export
    writes it into text files): both were found only after training, the second with a traceback."""
    (tmp_path / "mnist" / "9223372036854775807").mkdir(parents=True)
    result = run_trainer("--arch", "seed", "--limit", "200", "--model-dir", str(tmp_path))
    assert_one_line_error(result, "holds version 9223372036854775807, the highest a server reads")
    name = tmp_path.as_posix().encode() + b"/bad\xff"
    result = run_trainer("--arch", "seed", "--limit", "200", "--model-dir", os.fsdecode(name))
    assert_one_line_error(result, "the model directory's name is not UTF-8 text")


def test_the_handwriting_set_is_looked_for_beside_the_data_dir(tmp_path: Path) -> None:
    """`plus` mixes in data/handwriting: with --data-dir elsewhere, beside it; it was looked for under
    the working directory whatever the flag."""
    data = tmp_path / "data"
    shutil.copytree(DATA_DIR, data / "mnist")
    result = run_trainer(
        "--data-dir", str(data / "mnist"), "--limit", "200", "--model-dir", str(tmp_path / "m")
    )
    assert_one_line_error(result, f"{data / 'handwriting' / 'handwriting.npz'}")


def test_unwritable_model_dir_is_refused_before_training(tmp_path: Path) -> None:
    blocker = tmp_path / "models"
    blocker.write_text("a file where the model directory should be")
    result = run_trainer("--limit", "200", "--model-dir", str(blocker))
    assert_one_line_error(result, f"cannot write to model directory {blocker}/mnist")


def test_non_terminal_output_is_one_line_per_epoch_and_no_tensorflow_chatter(trained_model_dir: Path) -> None:
    # The session fixture's run is the CLI with captured output; repeat one to read what it printed.
    result = run_trainer(
        "--arch", "seed", "--limit", "500", "--epochs", "2", "--model-dir", str(trained_model_dir / "x")
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("exported mnist version 1 (seed): test accuracy ")
    accuracy = float(re.search(r"test accuracy ([0-9.]+)%", result.stdout)[1]) / 100  # type: ignore[index]
    poor = [["warning:", "version"]] if accuracy < 0.9 else []  # a model this poor is served all the same
    assert [line.split()[:2] for line in result.stderr.splitlines()] == [
        ["epoch", "1/2"],
        ["epoch", "2/2"],
        ["evaluating", "on"],  # the seconds between the last epoch and the version are not silent
        *poor,
    ]


def test_ctrl_c_during_training_leaves_no_version(tmp_path: Path) -> None:
    trainer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trainer",
            "--arch",
            "seed",
            "--limit",
            "2000",
            "--epochs",
            "500",
            "--patience",
            "500",
            "--model-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    progress = tmp_path / "mnist" / ".runs"
    deadline = time.monotonic() + 120
    while not any(json.loads(p.read_text())["epoch"] >= 1 for p in progress.glob("*/progress.json")):
        assert time.monotonic() < deadline and trainer.poll() is None, "trainer never finished an epoch"
        time.sleep(0.2)
    trainer.send_signal(signal.SIGINT)
    _, stderr = trainer.communicate(timeout=60)
    assert trainer.returncode == 130
    assert stderr.strip().splitlines()[-1] == "interrupted: no version was exported"
    assert no_versions(tmp_path / "mnist") and not list((tmp_path / "mnist").glob(".staging-*"))
    (record,) = progress.glob("*/progress.json")
    assert json.loads(record.read_text())["state"] == "failed"


def test_a_full_disk_during_the_export_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    """The file-size limit stands in for a full disk: TensorFlow's write of the variables fails."""
    command = [sys.executable, "-m", "trainer", "--arch", "seed", "--limit", "500", "--epochs", "1"]
    result = subprocess.run(
        ["bash", "-c", 'ulimit -f 1000 && exec "$@"', "bash", *command, "--model-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    assert (
        result.stderr.strip().splitlines()[-1].startswith(f"error: cannot write the version under {tmp_path}")
    )
    assert "Traceback" not in result.stderr
    assert no_versions(tmp_path / "mnist") and not list((tmp_path / "mnist").glob(".staging-*"))


def test_the_quick_example_in_help_gives_a_model_worth_trying(tmp_path: Path) -> None:
    """The quick run --help offers must give a model that reads digits (>= 90% on the test set)."""
    (quick,) = [argv for argv in example_commands(EXAMPLES, "python -m trainer") if "--limit" in argv]
    result = run_trainer(*quick, "--model-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "mnist" / "1" / "assets.extra" / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.90


def test_quick_first_on_an_empty_model_exports_a_quick_model_then_the_one_asked_for(tmp_path: Path) -> None:
    """`make up`'s first run: version 1 is the quick `seed` model, version 2 the run asked for."""
    result = run_trainer(
        "--arch", "seed", "--limit", "3000", "--epochs", "1", "--quick-first", "--model-dir", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    base = tmp_path / "mnist"
    assert versions(base) == [1, 2]
    cards = [json.loads((base / str(v) / "assets.extra" / "model_card.json").read_text()) for v in (1, 2)]
    assert [(c["hyperparameters"]["limit"], c["hyperparameters"]["epochs"]) for c in cards] == [
        (6000, 2),
        (3000, 1),
    ]
    assert "exported mnist version 1" in result.stdout and "exported mnist version 2" in result.stdout


@pytest.mark.fast
def test_a_disk_without_room_for_a_version_is_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A nearly full volume trained to the end and failed at the export, in TensorFlow's op words."""
    monkeypatch.setattr(
        shutil, "disk_usage", lambda path: SimpleNamespace(total=10**9, used=10**9, free=1_500_000)
    )
    with pytest.raises(
        UsageError, match=r"only 1\.5 MB free on the disk holding .*: a version takes a few MB"
    ):
        check_writable(tmp_path / "mnist")


@pytest.mark.fast
def test_tensorflows_write_errors_are_said_without_the_ops_wrapping() -> None:
    wrapped = (
        "{{function_node __wrapped__SaveV2_dtypes_18_device_/job:localhost/replica:0/task:0/device:CPU:0}} "
        "/models/mnist/.staging-1/variables/variables_temp; No space left on device [Op:SaveV2]\nmore"
    )
    assert (
        plain_tf_error(wrapped)
        == "/models/mnist/.staging-1/variables/variables_temp; No space left on device"
    )
