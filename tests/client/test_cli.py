"""The `mnist` command as a user runs it: formats, batches, bad files, exit codes."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from wcwidth import wcswidth

from client import ServingClient, normalise_bytes
from client.api import Transport
from client.cli import EXAMPLES, parse_args
from client.folders import Target, expand, matches, predicted
from tests.client.conftest import encode, photo_of
from tests.conftest import ROOT, ServerProcess, example_commands, free_port
from trainer.data import Split


def client_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "mnist"), *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        timeout=120,
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, mnist_test: Split) -> Path:
    """Five photographed digits in two folders, and one file that is not an image."""
    root = tmp_path_factory.mktemp("uploads")
    (root / "more").mkdir()
    for index in range(5):
        place = root / "more" if index >= 3 else root
        (place / f"digit{index}.jpg").write_bytes(encode(photo_of(mnist_test.images[index]), "JPEG"))
    (root / "notes.png").write_bytes(b"this is not a picture")
    return root


def test_folder_to_json_lines_carries_on_past_a_bad_file(server: ServerProcess, folder: Path) -> None:
    result = client_cli("predict", "--grpc", server.grpc_target, "--json", "--batch-size", "2", str(folder))
    assert result.returncode == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 6
    errors = [r for r in records if "error" in r]
    assert [Path(r["path"]).name for r in errors] == ["notes.png"] and "not an image" in errors[0]["error"]
    good = [r for r in records if "error" not in r]
    assert all(
        set(r) == {"path", "digit", "probabilities", "version"} and len(r["probabilities"]) == 10
        for r in good
    )
    assert result.stderr.strip() == "1 of 6 inputs failed"


def test_a_damaged_tiff_is_one_row_and_libtiffs_own_complaint_stays_off_the_terminal(
    server: ServerProcess, mnist_test: Split, tmp_path: Path
) -> None:
    """libtiff prints "Using code not yet in table." to descriptor 2 itself, from the CLI's process or
    from its workers; stderr holds only the command's own line."""
    lzw = io.BytesIO()
    Image.fromarray(photo_of(mnist_test.images[0])).save(lzw, "TIFF", compression="tiff_lzw")
    damaged = bytearray(lzw.getvalue())
    for at in range(16, len(damaged) // 2, 37):  # the strips; Pillow writes the directory after them
        damaged[at] ^= 0x5A
    (tmp_path / "scan.tif").write_bytes(damaged)
    (tmp_path / "digit.png").write_bytes(encode(photo_of(mnist_test.images[1]), "PNG"))
    for paths in ([str(tmp_path / "scan.tif")], [str(tmp_path)]):
        result = client_cli("predict", "--grpc", server.grpc_target, "--json", "--batch-size", "1", *paths)
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        assert [row.get("error", "") for row in rows if row["path"].endswith("scan.tif")] == [
            "the image is truncated or corrupt (decoder error -2)"
        ]
        assert (result.returncode, result.stderr) == (1, f"1 of {len(rows)} inputs failed\n")


def test_only_regular_files_are_read_and_none_past_the_limit(
    server: ServerProcess, tmp_path: Path, mnist_test: Split
) -> None:
    """A FIFO named like an image (which would wait for a writer forever), a link to /dev/zero (which
    never ends) and a file over 10 MB are each one error line, refused before any is read; the digits
    beside them are answered; `[a].png` is the file of that name, not a pattern."""
    os.mkfifo(tmp_path / "b.png")
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    with (tmp_path / "huge.png").open("wb") as huge:
        huge.truncate(200 * 1024 * 1024)  # sparse: 200 MB that take no disk
    digit = encode(photo_of(mnist_test.images[0]))
    (tmp_path / "[a].png").write_bytes(digit)
    (tmp_path / "seven.png").write_bytes(digit)
    result = client_cli(
        "predict", "--grpc", server.grpc_target, "--json", str(tmp_path), str(tmp_path / "[a].png")
    )
    records = {Path(r["path"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert records["b.png"]["error"] == records["zero.png"]["error"] == "not a regular file"
    assert "over the limit" in records["huge.png"]["error"]
    assert records["seven.png"]["digit"] == records["[a].png"]["digit"] == 7
    assert result.returncode == 1 and result.stderr.strip() == "3 of 6 inputs failed"


def test_standard_input_is_read_no_further_than_the_limit(server: ServerProcess) -> None:
    with open("/dev/zero", "rb") as zeros:
        result = subprocess.run(
            [str(Path(sys.executable).parent / "mnist"), "predict", "--grpc", server.grpc_target, "-"],
            cwd=ROOT,
            stdin=zeros,
            capture_output=True,
            timeout=60,
            text=True,
        )
    assert result.returncode == 1 and "standard input holds more than the limit" in result.stdout


def test_csv_over_rest_and_stdin(server: ServerProcess, folder: Path) -> None:
    result = client_cli(
        "predict",
        "--rest",
        server.rest_url,
        "--csv",
        str(folder / "digit0.jpg"),
        str(folder / "more" / "*.jpg"),
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [Path(r["path"]).name for r in rows] == ["digit0.jpg", "digit3.jpg", "digit4.jpg"]
    assert all(r["version"] == "1" and r["error"] == "" for r in rows)
    piped = client_cli(
        "predict", "--grpc", server.grpc_target, "--json", "-", stdin=(folder / "digit0.jpg").read_bytes()
    )
    assert piped.returncode == 0 and json.loads(piped.stdout)["path"] == "-"
    assert str(json.loads(piped.stdout)["digit"]) == rows[0]["digit"]


def test_status_and_metadata(server: ServerProcess) -> None:
    status = client_cli("status", "--grpc", server.grpc_target)
    assert status.returncode == 0 and status.stdout.strip() == "mnist  version 1  AVAILABLE"
    metadata = client_cli("metadata", "--rest", server.rest_url)
    assert json.loads(metadata.stdout)["model_spec"]["version"] == "1"


def test_server_down_and_usage_errors_are_one_line() -> None:
    down = client_cli("status", "--grpc", f"127.0.0.1:{free_port()}", "--timeout", "1")
    assert down.returncode == 1 and len(down.stderr.strip().splitlines()) == 1
    assert "UNAVAILABLE" in down.stderr and "is the server running" in down.stderr
    port = free_port()
    refused = client_cli("status", "--rest", f"http://127.0.0.1:{port}", "--timeout", "1")
    assert (refused.returncode, refused.stderr) == (
        1,
        f"error: UNAVAILABLE: cannot reach http://127.0.0.1:{port}: Connection refused "
        f"(is the server running at http://127.0.0.1:{port}?)\n",
    )
    nothing = client_cli("predict", "--json", "/nonexistent/*.png", "--grpc", f"127.0.0.1:{free_port()}")
    assert json.loads(nothing.stdout) == {"path": "/nonexistent/*.png", "error": "No such file or directory"}
    assert nothing.returncode == 1 and nothing.stderr == "1 of 1 inputs failed\n"
    bad_flag = client_cli("predict", "--batch-size", "0", "x.png")
    assert bad_flag.returncode == 2
    assert bad_flag.stderr == "mnist: error: --batch-size must be at least 1 (see mnist --help)\n"
    unknown = client_cli("predict", "--nope", "x.png")
    assert unknown.returncode == 2 and len(unknown.stderr.splitlines()) == 1
    missing = client_cli("predict", "--json", "/nonexistent.png", "--grpc", f"127.0.0.1:{free_port()}")
    assert missing.returncode == 1 and "No such file or directory" in json.loads(missing.stdout)["error"]
    no_scheme = client_cli("predict", "--rest", "localhost:8501", "x.png")
    assert (
        no_scheme.returncode == 2 and "--rest takes a URL such as http://localhost:8501" in no_scheme.stderr
    )
    a_url = client_cli("status", "--grpc", "http://localhost:8500")
    assert (
        a_url.returncode == 2 and "--grpc takes HOST:PORT such as localhost:8500, not a URL" in a_url.stderr
    )


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--timeout", "0"], "--timeout takes seconds, more than 0 and at most 3600, not 0"),
        (["--timeout", "3600.0001"], "--timeout takes seconds, more than 0 and at most 3600, not 3600.0001"),
        (["--timeout", "inf"], "--timeout takes seconds, more than 0 and at most 3600, not inf"),
        (["--timeout", "nan"], "--timeout takes seconds, more than 0 and at most 3600, not nan"),
        (["--timeout", "1e300"], "--timeout takes seconds, more than 0 and at most 3600, not 1e+300"),
        (
            ["--grpc", "127.0.0.1"],
            "--grpc takes HOST:PORT such as localhost:8500, with the port: '127.0.0.1'",
        ),
        (["--rest", "http://[::1"], "--rest takes a URL such as http://localhost:8501, not 'http://[::1'"),
        (
            ["--rest", "http://h:99999"],
            "--rest takes a URL such as http://localhost:8501, not 'http://h:99999'",
        ),
    ],
)
def test_a_timeout_or_address_that_cannot_work_is_a_usage_error(flags: list[str], expected: str) -> None:
    """Not a traceback, a wait of 443's retries or a DEADLINE_EXCEEDED that blames the server."""
    result = client_cli("status", *flags)
    assert (result.returncode, result.stderr) == (2, f"mnist: error: {expected} (see mnist --help)\n")


def test_folders_and_globs_that_name_no_image_and_heic_photos_are_each_a_failed_input(
    server: ServerProcess, tmp_path: Path, mnist_test: Split
) -> None:
    """A folder named like an image is walked (its images answered), never read as a file in a
    worker (whose IsADirectoryError lost every answer); a glob that matches nothing, an empty
    folder and a HEIC or AVIF photo are each one failed input, in a run that answers the rest."""
    digit = encode(photo_of(mnist_test.images[0]))
    (tmp_path / "zz.png").mkdir()
    (tmp_path / "zz.png" / "inner.png").write_bytes(digit)
    (tmp_path / "seven.png").write_bytes(digit)
    (tmp_path / "phone.heic").write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic")
    (tmp_path / "new.avif").write_bytes(b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf")
    empty = tmp_path.parent / f"{tmp_path.name}-empty"
    empty.mkdir()
    typo = str(tmp_path / "typo" / "*.png")
    inputs = [str(tmp_path), str(tmp_path / "z*.png"), typo, str(empty)]
    result = client_cli("predict", "--json", "--batch-size", "1", "--grpc", server.grpc_target, *inputs)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    inner, seven = str(tmp_path / "zz.png" / "inner.png"), str(tmp_path / "seven.png")
    assert [(r["path"], r.get("error", r.get("digit"))) for r in records] == [
        (str(tmp_path / "new.avif"), "AVIF is not supported: convert to PNG or JPEG"),
        (str(tmp_path / "phone.heic"), "HEIC is not supported: convert to PNG or JPEG"),
        (seven, 7),
        (inner, 7),
        (inner, 7),
        (typo, "No such file or directory"),
        (str(empty), "a folder with no images in it"),
    ]
    assert (result.returncode, result.stderr) == (1, "4 of 7 inputs failed\n")


@pytest.mark.fast
def test_globs_do_not_follow_links_to_folders_as_bashs_globstar_does_not(tmp_path: Path) -> None:
    """Two links back up the tree made glob.glob's `**` walk for ever; a dotted name matches only a
    pattern that names a dot, as in the shell."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.jpg", "a/b/y.jpg", "a/.hidden.jpg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "a" / "self").symlink_to(".")
    (tmp_path / "a" / "b" / "up").symlink_to("..")
    found = list(expand([str(tmp_path / "a" / "**" / "*.jpg")]))
    assert found == [str(tmp_path / "a" / "b" / "y.jpg"), str(tmp_path / "a" / "x.jpg")]
    assert matches(str(tmp_path / "a" / ".*.jpg")) == [str(tmp_path / "a" / ".hidden.jpg")]


class NotTfServing(BaseHTTPRequestHandler):
    """A web server at the address given that is not TF Serving: JSON without TF Serving's fields
    for /json/..., a refusal in plain text for /plain/... (as a server's connection cap words it),
    else a page of HTML."""

    def do_GET(self) -> None:
        status, kind, body = 404, "text/html", b"<html>\n<body>\n<h1>Welcome</h1>\n</body>\n</html>\n"
        if self.path.startswith("/json/"):
            status, kind, body = 200, "application/json", b'{"outputs": {}}'
        elif self.path.startswith("/plain/"):
            status, kind, body = 503, "text/plain", b"over 1 connections are open\nsecond line"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: object) -> None:  # the test's output is not the place for its log
        pass


def test_a_web_server_that_is_not_tf_serving_is_one_line(tmp_path: Path, mnist_test: Split) -> None:
    (tmp_path / "digit.png").write_bytes(encode(photo_of(mnist_test.images[0])))
    with ThreadingHTTPServer(("127.0.0.1", 0), NotTfServing) as web:
        threading.Thread(target=web.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{web.server_port}"
        status = client_cli("status", "--rest", f"{url}/json")
        predict = client_cli(
            "predict", "--rest", f"{url}/json", "--version", "1", str(tmp_path / "digit.png")
        )
        html = client_cli("status", "--rest", url)
        plain = client_cli("status", "--rest", f"{url}/plain", "--timeout", "1")
        web.shutdown()
    for result in (status, predict):
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr == (
            f"error: UNKNOWN: {url}/json did not answer as a TF Serving REST API ({{'outputs': {{}}}})\n"
        )
    assert (html.returncode, html.stderr) == (
        1,
        f"error: NOT_FOUND: {url} did not answer as a TF Serving REST API (HTTP 404, text/html)\n",
    )
    assert (plain.returncode, plain.stderr) == (
        1,
        f"error: UNAVAILABLE: over 1 connections are open (is the server running at {url}/plain?)\n",
    )


def test_a_server_that_fails_a_call_ends_the_run_in_one_line(
    server: ServerProcess, folder: Path, tmp_path: Path
) -> None:
    """Down, or with no such model: every batch would fail alike, so the first failed call ends the
    command with one line on stderr (the hint for an unreachable server), not an error per image."""
    digits = [str(p) for p in sorted(folder.rglob("*.jpg"))] * 20
    down = client_cli("predict", "--json", "--timeout", "1", "--grpc", f"127.0.0.1:{free_port()}", *digits)
    assert down.returncode == 1 and down.stdout == ""
    (line,) = down.stderr.strip().splitlines()
    assert line.startswith("error: UNAVAILABLE") and "is the server running" in line
    unknown = client_cli("predict", "--json", "--grpc", server.grpc_target, "--model", "nope", *digits)
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr.strip().splitlines() == [
        "error: NOT_FOUND: Servable not found for request: Latest(nope)"
    ]
    no_label = client_cli("predict", "--json", "--grpc", server.grpc_target, "--label", "stable", *digits)
    assert no_label.stderr.strip().splitlines() == [
        "error: INVALID_ARGUMENT: Unrecognized servable version label: stable "
        "(labels are set in the server's model config: docs/rollout.md)"
    ]


def test_a_version_past_64_bits_is_a_usage_error() -> None:
    """gRPC's int64 field would raise ValueError from deep inside the call."""
    result = client_cli("status", "--version", "99999999999999999999")
    assert result.returncode == 2 and result.stderr == (
        "mnist status: error: argument --version: a version is a 64-bit integer, not 99999999999999999999 "
        "(see mnist status --help)\n"
    )


def test_answers_that_cannot_be_written_are_one_line(server: ServerProcess, folder: Path) -> None:
    """A full disk (`> /dev/full`) and an output closed from the start (`>&-`): not a traceback."""
    digit = str(next(folder.rglob("*.jpg")))
    command = [
        str(Path(sys.executable).parent / "mnist"),
        "predict",
        "--json",
        "--grpc",
        server.grpc_target,
        digit,
    ]
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            command, cwd=ROOT, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120
        )
    assert (result.returncode, result.stderr) == (
        1,
        "error: cannot write the answers: No space left on device\n",
    )
    closed = subprocess.run(
        command,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.close(1),
    )
    assert closed.returncode == 2
    assert closed.stderr == "error: standard output is closed: nowhere to write the answers\n"


def test_a_folder_that_cannot_be_read_is_a_failed_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """os.walk skips a folder it cannot list (root reads any, so the refusal is made here)."""
    (tmp_path / "locked").mkdir()
    (tmp_path / "a.png").write_bytes(b"")
    listing = os.scandir

    def scandir(path: str) -> Any:
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return listing(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert list(expand([str(tmp_path)])) == [str(tmp_path / "a.png"), str(tmp_path / "locked")]
    too_long = "a" * 5000  # the system will not look at it: an input that fails, not a traceback
    assert list(expand([too_long])) == [too_long]


def test_a_reader_that_stops_early_ends_the_command_quietly(server: ServerProcess, folder: Path) -> None:
    """`mnist predict ... | head -1`: the closed pipe ends the command, with no traceback."""
    digits = [str(p) for p in sorted(folder.rglob("*.jpg"))] * 200
    command = [str(Path(sys.executable).parent / "mnist"), "predict", "--json", "--grpc", server.grpc_target]
    with subprocess.Popen(
        [*command, *digits], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as run:
        assert run.stdout is not None and run.stderr is not None
        assert json.loads(run.stdout.readline())["digit"] in range(10)
        run.stdout.close()
        assert run.wait(timeout=60) == 141
        assert run.stderr.read() == b""


def test_ctrl_c_ends_a_folder_run_at_once_in_one_line_however_often_pressed(
    server: ServerProcess, tmp_path: Path, mnist_test: Split
) -> None:
    """The first Ctrl-C stops the workers mid-batch (photos of seconds a batch) and says
    `interrupted`; a second one, while the command ends, ends it too: never a traceback, never a
    process left waiting on its workers."""
    big = photo_of(mnist_test.images[0], size=(1600, 1600), scale=40, at=(100, 100), noise=4)
    (tmp_path / "big.png").write_bytes(encode(big))
    digits = [str(tmp_path / "big.png")] * 200
    command = [str(Path(sys.executable).parent / "mnist"), "predict", "--json", "--grpc", server.grpc_target]
    for presses in (1, 2):
        with subprocess.Popen(
            [*command, "--batch-size", "8", *digits], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ) as run:
            assert run.stdout is not None and run.stderr is not None
            assert json.loads(run.stdout.readline())["digit"] in range(10)  # mid-run: workers busy
            for _ in range(presses):
                run.send_signal(signal.SIGINT)
            interrupted = time.monotonic()
            run.wait(timeout=10)
            assert time.monotonic() - interrupted < 1.5
            # A second press ends the process as the system does (unless both came as one signal).
            assert run.returncode in ({130} if presses == 1 else {130, -signal.SIGINT})
            assert run.stderr.read() in ({b"interrupted\n"} if presses == 1 else {b"", b"interrupted\n"})


def test_ctrl_c_from_the_first_moment_on_is_never_a_traceback() -> None:
    """Ctrl-C pressed again and again from the moment the command's own code starts, while it is still
    importing what it needs: it ends as `interrupted` (130), or as the system ends it; never with a
    traceback. (Before that, Python's own start-up, its site and the venv's .pth files, prints
    Python's traceback for any program: the presses begin once a bare interpreter would be up.)"""
    bare = []
    for _ in range(3):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.monotonic() - started)
    for first_press_s in (0.0, 0.05, 0.1, 0.15, 0.2, 0.3):
        with subprocess.Popen(
            [str(Path(sys.executable).parent / "mnist"), "status", "--grpc", f"127.0.0.1:{free_port()}"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as run:
            time.sleep(1.5 * max(bare) + first_press_s)  # when the user presses, not a wait for anything
            deadline = time.monotonic() + 10
            while run.poll() is None and time.monotonic() < deadline:
                run.send_signal(signal.SIGINT)
                time.sleep(0.005)  # the presses' pace, not a wait for anything
            assert run.wait(timeout=10) in (130, -signal.SIGINT)
            assert run.stderr is not None and run.stderr.read() in (b"", b"interrupted\n")


def test_rows_on_a_terminal_stay_off_the_progress_bars_line(server: ServerProcess, folder: Path) -> None:
    """stdout and stderr one terminal: each table row on a line of its own, the bar taken off its
    line while rows are printed, the columns in line on screen whatever the paths' lengths and
    scripts (a CJK character takes two columns); a newline in a file's name escaped, not splitting
    its row."""
    odd = folder.parent / "odd"
    odd.mkdir(exist_ok=True)
    for name in ("two\nlines.jpg", "数字.jpg"):
        (odd / name).write_bytes((folder / "digit0.jpg").read_bytes())
    digits = [str(p.relative_to(folder.parent)) for p in sorted(folder.rglob("*.jpg"))] * 4
    digits += ["odd/数字.jpg", "odd/two\nlines.jpg", "odd/../odd/../odd/../odd/two\nlines.jpg"]
    leader, follower = pty.openpty()
    with subprocess.Popen(
        [str(Path(sys.executable).parent / "mnist"), "predict", "--batch-size", "2", "--grpc"]
        + [server.grpc_target, *digits],
        cwd=folder.parent,
        stdout=follower,
        stderr=follower,
    ) as run:
        os.close(follower)
        written = b""
        while chunk := _read_terminal(leader):
            written += chunk
        assert run.wait(timeout=60) == 0
    os.close(leader)
    lines = written.decode().replace("\r\n", "\n").split("\n")
    rows = [line.split("\r")[-1] for line in lines if "version 1" in line]
    assert len(rows) == len(digits)
    assert all(re.fullmatch(r"\S+ +\d  +\d+\.\d\d%  version 1", row) for row in rows), rows
    assert len({wcswidth(row[: row.index("  version 1")]) for row in rows}) == 1, rows
    assert rows[-2].startswith('"odd/two\\nlines.jpg"  ')


def _read_terminal(leader: int) -> bytes:
    """What the command wrote to its terminal since the last read; b"" once it has closed it."""
    try:
        return os.read(leader, 65536)
    except OSError:  # EIO: the command has exited and the terminal's other end is closed
        return b""


def test_help_shows_examples_that_parse() -> None:
    result = client_cli("--help")
    assert result.returncode == 0 and EXAMPLES.strip() in result.stdout
    examples = example_commands(EXAMPLES, "mnist")
    assert [argv[0] for argv in examples] == ["predict"] * 5 + ["status", "metadata"]
    for argv in examples:
        parse_args(argv)


class RecordingTransport(Transport):
    """Keeps every image it is sent and answers each with its serial number as the first
    probability, so an answer shows which image it was given for. Its first call waits until a
    later one has been answered: the answers come back out of order."""

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []
        self.lock = threading.Lock()
        self.later_answered = threading.Event()

    def predict(
        self, images: np.ndarray, model: str, version: int | None, label: str | None, timeout: float
    ) -> tuple[np.ndarray, int]:
        with self.lock:
            first = len(self.images)
            self.images.extend(images)
        if first == 0:
            assert self.later_answered.wait(timeout=30), "no later call came while the first was waiting"
        answers = np.zeros((len(images), 10), dtype=np.float32)
        answers[:, 0] = np.arange(first, first + len(images))
        if first > 0:
            self.later_answered.set()
        return answers, 1


@pytest.mark.fast
def test_batches_normalised_in_workers_come_back_in_order_as_normalised_here(
    tmp_path: Path, mnist_test: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several batches (so worker processes normalise them), a bad file and standard input among
    them, answers that come back out of order: every input answered or reported in the order given,
    each answer for its own image, the image exactly as normalise_bytes makes it in this process."""
    paths = []
    for index in range(9):
        path = tmp_path / f"digit{index}.png"
        path.write_bytes(encode(photo_of(mnist_test.images[index], noise=4, seed=index), "PNG"))
        paths.append(str(path))
    (tmp_path / "notes.png").write_bytes(b"this is not a picture")
    paths.insert(4, str(tmp_path / "notes.png"))
    paths.insert(7, "-")
    piped = encode(photo_of(mnist_test.images[20]), "JPEG")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(piped)))
    transport = RecordingTransport()
    batches = [paths[i : i + 2] for i in range(0, len(paths), 2)]

    batched = predicted(lambda: ServingClient(transport), batches, Target(), concurrency=3)
    outcomes = [o for batch in batched for o in batch]

    assert [o.path for o in outcomes] == paths
    assert [(o.path, o.error) for o in outcomes if o.error] == [
        (paths[4], "not an image file (expected PNG, JPEG, WebP, GIF, BMP or TIFF)")
    ]
    answered = [o for o in outcomes if not o.error]
    assert len(transport.images) == len(answered) == 10
    for outcome in answered:
        data = piped if outcome.path == "-" else Path(outcome.path).read_bytes()
        sent = transport.images[int(outcome.probabilities[0])]
        assert np.array_equal(sent, normalise_bytes(data).tensor), outcome.path
