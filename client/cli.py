"""The `mnist` command: send images of digits to a model server and print what it read; or ask it about
its models.

mnist predict digit.png photos/ 'scans/*.jpg'
mnist predict --rest http://localhost:8501 --json folder/ > answers.jsonl
mnist status
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager

from wcwidth import wcswidth

from cliargs import OneLineParser
from client.addresses import grpc_target_problem, rest_url_problem
from client.api import DEFAULT_GRPC, ServingClient, ServingClientError, printable
from client.folders import Outcome, Target, expand, predicted

MAX_TIMEOUT = 3600  # seconds: longer is a typo, or no deadline at all (inf)
MAX_PATH_COLUMN = 60  # screen columns: a longer path pushes its own row's columns out, not every row's

EXAMPLES = """examples:
  mnist predict digit.png                      one image, over gRPC (localhost:8500)
  mnist predict photos/ 'scans/**/*.jpg'       folders and globs, in batches
  mnist predict --json - < digit.png           standard input, one JSON line out
  mnist predict --rest http://localhost:8501 --csv folder/
                                               over REST, as CSV
  mnist predict --label stable digit.png       the version labelled stable (labels are set in the
                                               server's model config: docs/rollout.md)
  mnist status
  mnist metadata --version 2
"""


class OutputError(Exception):
    """The answers could not be written (a full disk, a file too large): the command ends in one line."""


@contextmanager
def writing_answers() -> Iterator[None]:
    """A failure to write to stdout as OutputError; a closed pipe stays BrokenPipeError (`| head`)."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as err:
        raise OutputError(err.strerror or str(err)) from None


class Printer:
    """Answers to stdout as a table (terminal), JSON lines or CSV."""

    def __init__(self, form: str, paths: list[str]) -> None:
        """`paths`: every input, so that the table's first column holds the longest (up to a limit)."""
        self.form = form
        self.width = min(max((columns(shown(path)) for path in paths), default=0), MAX_PATH_COLUMN)
        if form == "csv":
            self.csv = csv.writer(sys.stdout)
            self.csv.writerow(["path", "digit", "version", *(f"p{d}" for d in range(10)), "error"])

    def __call__(self, outcome: Outcome) -> None:
        with writing_answers():
            self._write(outcome)

    def _write(self, outcome: Outcome) -> None:
        if self.form == "json":
            record = (
                {"path": outcome.path, "error": outcome.error}
                if outcome.error
                else {
                    "path": outcome.path,
                    "digit": outcome.digit,
                    "probabilities": [float(f"{p:.6g}") for p in outcome.probabilities],
                    "version": outcome.version,
                }
            )
            print(json.dumps(record), flush=True)
        elif self.form == "csv":
            probabilities = [f"{p:.6f}" for p in outcome.probabilities] or [""] * 10
            self.csv.writerow(
                [outcome.path, outcome.digit, outcome.version, *probabilities, outcome.error or ""]
            )
        else:
            name = shown(outcome.path)
            path = name + " " * (self.width - columns(name))
            if outcome.error:
                print(f"{path}  error: {outcome.error}")
            else:
                confidence = max(outcome.probabilities)
                print(f"{path}  {outcome.digit}  {confidence:7.2%}  version {outcome.version}")


def shown(path: str) -> str:
    """A path as the table shows it: a name with a newline or other control character quoted and
    escaped, as JSON writes it."""
    return path if path.isprintable() else json.dumps(path, ensure_ascii=False)


def columns(text: str) -> int:
    """How many terminal columns a printable text takes: two for each wide character (CJK, most
    emoji), none for a combining one, so that the table's columns line up whatever the names."""
    width = wcswidth(text)
    return width if width >= 0 else len(text)  # -1: a character it has no width for


def connect(args: argparse.Namespace) -> ServingClient:
    """The client the command line names: --rest URL, else --grpc HOST:PORT."""
    if args.rest:
        return ServingClient.rest(args.rest, timeout=args.timeout)
    return ServingClient.grpc(args.grpc, timeout=args.timeout)


def run_predict(args: argparse.Namespace) -> int:
    paths = list(expand(args.paths))
    show = Printer(args.format or ("table" if sys.stdout.isatty() else "json"), paths)
    batches = [paths[i : i + args.batch_size] for i in range(0, len(paths), args.batch_size)]
    failed = 0
    from tqdm import tqdm  # here, not above: the other commands need not import it

    bar = sys.stderr.isatty() and len(batches) > 1
    target = Target(args.model, args.version, args.label)
    # Both closed whatever ends the loop (Ctrl-C, a closed pipe): closing the batches stops the workers.
    with (
        tqdm(total=len(paths), unit="image", file=sys.stderr, leave=False, disable=not bar) as progress,
        closing(predicted(lambda: connect(args), batches, target, args.concurrency)) as answers,
    ):
        for outcomes in answers:
            # The bar is taken off its line while rows are printed (stdout and stderr may be one
            # terminal), and drawn again below them.
            with progress.external_write_mode(file=sys.stdout):
                for outcome in outcomes:
                    show(outcome)
                    failed += outcome.error is not None
            progress.update(len(outcomes))
    with writing_answers():
        sys.stdout.flush()  # what the table or CSV still buffers: a full disk says so here
    if failed:
        print(f"{failed} of {len(paths)} inputs failed", file=sys.stderr)
    return 1 if failed else 0


def run_status(args: argparse.Namespace) -> int:
    for status in connect(args).status(args.model, args.version):
        problem = f"  {status.error_code}: {status.error_message}" if status.error_code != "OK" else ""
        print(printable(f"{args.model}  version {status.version}  {status.state}{problem}"))
    return 0


def run_metadata(args: argparse.Namespace) -> int:
    print(json.dumps(connect(args).metadata(args.model, args.version, args.label), indent=2))
    return 0


def version_number(text: str) -> int:
    """A model version as TF Serving takes it, a 64-bit integer (argparse words a ValueError itself)."""
    number = int(text)
    if not -(2**63) <= number < 2**63:
        raise argparse.ArgumentTypeError(f"a version is a 64-bit integer, not {text}")
    return number


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(
        prog="mnist",
        description="Predict digits with a TF-Serving-compatible model server, or ask it about its models.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = OneLineParser(add_help=False)
    where = common.add_mutually_exclusive_group()
    where.add_argument(
        "--grpc", default=DEFAULT_GRPC, metavar="HOST:PORT", help=f"gRPC (default {DEFAULT_GRPC})"
    )
    where.add_argument("--rest", metavar="URL", help="REST instead, e.g. http://localhost:8501")
    common.add_argument("--model", default="mnist", help="default mnist")
    common.add_argument("--timeout", type=float, default=10.0, help="seconds per call (default 10)")
    version = OneLineParser(add_help=False)
    choice = version.add_mutually_exclusive_group()
    choice.add_argument("--version", type=version_number, help="a version number (default: the latest)")
    choice.add_argument("--label", help="a version label, e.g. stable")
    commands = parser.add_subparsers(dest="command", required=True)

    predict = commands.add_parser("predict", parents=[common, version], help="read digits from images")
    predict.add_argument("paths", nargs="+", metavar="PATH", help="files, folders, globs, or - for stdin")
    predict.add_argument("--batch-size", type=int, default=32, help="images per request (default 32)")
    predict.add_argument("--concurrency", type=int, default=4, help="requests at once (default 4)")
    form = predict.add_mutually_exclusive_group()
    form.add_argument(
        "--json", dest="format", action="store_const", const="json", help="one JSON object a line"
    )
    form.add_argument("--csv", dest="format", action="store_const", const="csv", help="CSV with a header row")
    predict.set_defaults(run=run_predict)

    status = commands.add_parser("status", parents=[common], help="each version's state")
    status.add_argument("--version", type=version_number, help="one version only")
    status.set_defaults(run=run_status)
    metadata = commands.add_parser("metadata", parents=[common, version], help="the model's signatures")
    metadata.set_defaults(run=run_metadata)
    args = parser.parse_args(argv)
    for name in ("batch_size", "concurrency"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 < args.timeout <= MAX_TIMEOUT:  # nan and inf too: gRPC and requests fail on them
        typed = repr(args.timeout).removesuffix(".0")  # 0, 3600.0001, inf: as a person writes them
        parser.error(f"--timeout takes seconds, more than 0 and at most {MAX_TIMEOUT}, not {typed}")
    problems = {"--grpc": grpc_target_problem(args.grpc), "--rest": args.rest and rest_url_problem(args.rest)}
    for flag, problem in problems.items():
        if problem:
            parser.error(f"{flag} {problem}")
    return args


def _hint(err: ServingClientError, args: argparse.Namespace) -> str:
    """What to do about the commonest failures, after the server's own words."""
    if err.status == "UNAVAILABLE":
        return f" (is the server running at {args.rest or args.grpc}?)"
    if "Unrecognized servable version label" in str(err):
        return " (labels are set in the server's model config: docs/rollout.md)"
    return ""


def command() -> int:
    """The `mnist` command as the shell runs it: main(), with C libraries kept off the terminal, and
    a second Ctrl-C ending the process at once."""
    keep_c_libraries_off_stderr()
    signal.signal(signal.SIGINT, interrupt_once)
    if sys.stdout is None:  # started with its output closed (`mnist ... >&-`)
        print("error: standard output is closed: nowhere to write the answers", file=sys.stderr)
        return 2
    return main()


def interrupt_once(signum: int, frame: object) -> None:
    """The first Ctrl-C is KeyboardInterrupt, which ends the command in one line; another, should
    anything in that ending wait (a call in flight to a server that does not answer), ends the process
    as the system ends it, without Python's traceback from wherever it was waiting."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    raise KeyboardInterrupt


def keep_c_libraries_off_stderr() -> None:
    """libtiff, inside Pillow, prints its own complaint about a damaged TIFF ("Using code not yet in
    table.") straight to file descriptor 2, beside the one line this command writes about that file.
    So Python's stderr moves to a copy of the descriptor and descriptor 2 itself to /dev/null: what
    this command (and any traceback) writes still reaches the terminal, what C code prints does not.
    Worker processes, forked, inherit both."""
    try:
        sys.stderr.flush()
        terminal = os.dup(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # no stderr at all, or not a file: nothing to keep off
        return
    # The stream lives as long as the process, as sys.stderr does: nothing to close it on.
    sys.stderr = open(terminal, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")  # noqa: SIM115
    silent = os.open(os.devnull, os.O_WRONLY)
    os.dup2(silent, 2)
    os.close(silent)


def main(argv: list[str] | None = None) -> int:
    """The command's exit status. A failed call to the server ends it with one line on stderr (after
    the answers already printed): every call after it would fail alike."""
    try:
        args = parse_args(argv)
        return args.run(args)
    except ServingClientError as err:
        print(f"error: {err}{_hint(err, args)}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader of the answers has gone (`| head`): nobody left to tell
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit fails too
        return 141  # as a command killed by SIGPIPE exits, in a shell
    except OutputError as err:  # a full disk (`> /dev/full`), a file too large
        print(f"error: cannot write the answers: {err}", file=sys.stderr)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor can Python's flush at exit
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
