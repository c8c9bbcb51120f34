"""Run the stack without Docker: the model server and the dashboard at once, and the trainer in the
background when the model has no version yet (`make up`).

python -m stack                                        # models/, ports 8500, 8501 and 8080
python -m stack --train-args="--arch seed --limit 5000 --epochs 2"  # a quick first model
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

import requests

from cliargs import OneLineParser, cannot_listen
from client import ServingClient, ServingClientError
from contract import model_dir
from contract.tflite_metadata import predates_tflite_signatures
from stack.compose import ComposeError, restart_policy, server_flags
from stack.supervisor import Exited, Part, Signalled, Supervisor

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
MODEL_CONFIG_FILE = ROOT / "serving" / "config" / "models.config"
METRICS_PATH = "/monitoring/prometheus/metrics"  # serving/config/monitoring.config's, TF Serving's default
MODEL_NAME = "mnist"  # as serving/config/models.config names it

EXAMPLES = """examples:
  make up                                       the same as: python -m stack
  TRAIN_ARGS="--arch seed --limit 5000 --epochs 2" make up
                                                a quick first model (about 10 s)
  VERBOSE=1 make up                             every part's own logging too
  MODEL_DIR=/tmp/models make up                 another model directory
  HOST=0.0.0.0 make up                          open the ports to the network (no password!)
  RETRAIN=1 make up                             train a new version even though one exists
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(
        prog="python -m stack",
        description="The model server, the dashboard and (when there is no model yet) the trainer, "
        "as docker-compose.yml runs them, on this machine. Ctrl-C stops them all.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model-dir", type=Path, default=Path("models"), help="default models")
    parser.add_argument("--train-args", default="", help="extra trainer flags, e.g. '--epochs 3'")
    parser.add_argument("--grpc-port", type=int, default=8500, help="default 8500")
    parser.add_argument("--rest-port", type=int, default=8501, help="default 8501")
    parser.add_argument("--dashboard-port", type=int, default=8080, help="default 8080")
    parser.add_argument(
        "--host", default="127.0.0.1", help="where the server and dashboard listen (default: this machine)"
    )
    parser.add_argument("--verbose", action="store_true", help="show every part's own logging")
    return parser.parse_args(argv)


def build_parts(args: argparse.Namespace, train: bool) -> list[Part]:
    """The parts as docker-compose.yml's services run them, each restarted by its service's policy."""
    ports = {"port": args.grpc_port, "rest_api_port": args.rest_port}
    verbose = ["--verbose"] if args.verbose else []
    flags = server_flags(COMPOSE_FILE, args.model_dir, ports, args.host)
    parts = [
        Part(
            "serving",
            [sys.executable, "-m", "serving", *flags],
            restart=restart_policy(COMPOSE_FILE, "serving"),
        ),
        Part(
            "dashboard",
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "dashboard/app.py",
                f"--server.port={args.dashboard_port}",
                f"--server.address={args.host}",
            ],
            env={
                "MODEL_DIR": str(args.model_dir.resolve()),
                "MODEL_NAME": MODEL_NAME,
                "MODEL_CONFIG_FILE": str(MODEL_CONFIG_FILE),
                "SERVING_GRPC": f"localhost:{args.grpc_port}",
                "SERVING_METRICS": f"http://localhost:{args.rest_port}{METRICS_PATH}",
            },
            echo=args.verbose,  # Streamlit's own banner names addresses that are not the ones to open
            restart=restart_policy(COMPOSE_FILE, "dashboard"),
        ),
    ]
    parts[0].argv += verbose
    if train:
        trainer = [sys.executable, "-m", "trainer", "--model-dir", str(args.model_dir.resolve()), *verbose]
        # No flags of the user's: a quick model answers within a minute, the full one follows it as the
        # next version (the first run shows the rollover, too).
        extra = shlex.split(args.train_args) or ["--quick-first"]
        parts.append(
            Part(
                "trainer",
                trainer + extra,
                essential=False,
                stop_signal=signal.SIGINT,  # the trainer's clean stop: no version exported
                restart=restart_policy(COMPOSE_FILE, "trainer"),
            )
        )
    return parts


def announce(supervisor: Supervisor, args: argparse.Namespace, stopping: threading.Event) -> None:
    """Print the addresses once the dashboard answers, and each version as it becomes the served one."""
    here = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host  # where this machine reaches them
    health = f"http://{here}:{args.dashboard_port}/_stcore/health"
    server = ServingClient.rest(f"http://{here}:{args.rest_port}", timeout=2, retries=0)
    announced, serving, server_starts = False, None, 0
    while not stopping.wait(0.5):
        if supervisor.starts["serving"] != server_starts:  # (re)started: its version is news again
            server_starts, serving = supervisor.starts["serving"], None
        if not announced and _answers(health):
            announced = True
            for line in (
                f"dashboard  http://localhost:{args.dashboard_port}",
                f"REST       http://localhost:{args.rest_port}/v1/models/{MODEL_NAME}",
                f"gRPC       localhost:{args.grpc_port}",
                "Ctrl-C stops everything",
            ):
                supervisor.say("stack", line)
        try:
            statuses = server.status(MODEL_NAME)
        except ServingClientError:
            continue  # not up yet, no version yet, or a slow answer
        latest = max((s.version for s in statuses if s.state == "AVAILABLE"), default=None)
        if latest is not None and latest != serving:
            supervisor.say("stack", f"{MODEL_NAME} version {latest} is AVAILABLE")
            serving = latest


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


class StartError(Exception):
    """The stack cannot start: one line for the user."""


def prepare(args: argparse.Namespace) -> tuple[list[Part], Path, bool]:
    """The parts to run, the model's base path, and whether the trainer is among the parts."""
    busy = [p for p in (args.grpc_port, args.rest_port, args.dashboard_port) if cannot_listen(args.host, p)]
    if busy:
        raise StartError(
            f"port {busy[0]} is in use (another `make up`?): stop what holds it, or choose other "
            "ports with GRPC_PORT, REST_PORT and DASHBOARD_PORT"
        )
    base_path = args.model_dir.resolve() / MODEL_NAME
    try:
        existing = model_dir.versions(base_path)
        # A version from before model.tflite carried its signatures cannot be served: train one that can.
        stale = bool(existing) and predates_tflite_signatures(base_path / str(existing[-1]))
        train = not existing or stale or os.environ.get("RETRAIN") == "1"
        base_path.mkdir(parents=True, exist_ok=True)  # the server waits on it quietly, not "not found"
    except OSError as err:
        raise StartError(f"cannot use the model directory {base_path}: {err.strerror}") from None
    try:
        return build_parts(args, train), base_path, train
    except ComposeError as err:
        raise StartError(str(err)) from None
    except ValueError as err:  # shlex: an unclosed quote
        raise StartError(f"TRAIN_ARGS {args.train_args!r}: {err}") from None


def run(args: argparse.Namespace, supervisor: Supervisor) -> int:
    try:
        parts, base_path, train = prepare(args)
    except StartError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stopping = threading.Event()
    code, asked_at = 1, time.monotonic()
    try:
        for part in parts:
            supervisor.start(part)
        if train:
            supervisor.say(
                "stack", f"training a version into {base_path} in the background; the dashboard shows it live"
            )
        else:
            supervisor.say("stack", f"serving the newest version in {base_path} (RETRAIN=1 trains another)")
        threading.Thread(target=announce, args=(supervisor, args, stopping), daemon=True).start()
        code, asked_at = watch(supervisor, base_path)
    except OSError as err:
        print(f"error: cannot start the stack: {err}", file=sys.stderr)
    finally:  # whatever happened above, nothing is left running
        stopping.set()
        supervisor.stop_all(parts, since=asked_at)
    supervisor.say("stack", "stopped")
    supervisor.flush()
    return code


def watch(supervisor: Supervisor, base_path: Path) -> tuple[int, float]:
    """Until a stop signal, or an exit that ends the stack: the stack's exit code, and when it ended.
    Parts that died meanwhile are started again when their restart delay has passed."""
    restarts: dict[str, tuple[float, Part]] = {}  # name: (when, part)
    while True:
        due = min((when for when, _ in restarts.values()), default=None)
        event = supervisor.next_event(None if due is None else max(due - time.monotonic(), 0))
        if event is None:  # a restart is due
            for name, (when, part) in list(restarts.items()):
                if when <= time.monotonic():
                    del restarts[name]
                    supervisor.start(part)
            continue
        if isinstance(event, Signalled):
            supervisor.say("stack", "stopping...")
            return 0, event.at
        verdict = event.part.restart.after_exit(event.returncode, event.ran_for_s)
        if verdict.restart:
            _say_last_lines(supervisor, event)
            supervisor.say(
                "stack",
                f"{event.part.name} stopped unexpectedly ({event.how}); starting it again in "
                f"{verdict.delay_s:g} s (restart: {event.part.restart.name})",
            )
            restarts[event.part.name] = (time.monotonic() + verdict.delay_s, event.part)
            continue
        code = report_exit(supervisor, event, base_path, verdict.why)
        if code is not None:
            return code, time.monotonic()


def _say_last_lines(supervisor: Supervisor, event: Exited) -> None:
    """A quiet part's last words, which were not shown as they came."""
    if not event.part.echo:
        for line in event.last_lines:
            supervisor.say(event.part.name, line)


def report_exit(supervisor: Supervisor, event: Exited, base_path: Path, gave_up: str = "") -> int | None:
    """What an exit that is not restarted means: None to keep going, or the stack's exit code."""
    part, code = event.part, event.returncode
    _say_last_lines(supervisor, event)
    if part.essential:
        why = f"; it {gave_up}, so it is not started again" if gave_up else ""
        supervisor.say("stack", f"{part.name} stopped unexpectedly ({event.how}){why}; stopping the rest")
        return 1
    if code == 0:
        supervisor.say("stack", "trainer done")  # the server says when it serves what was written
        return None
    if model_dir.versions(base_path):
        supervisor.say("stack", f"trainer failed ({event.how}); the previous version keeps serving")
        return None
    supervisor.say("stack", f"trainer failed ({event.how}) and there is no model to serve; stopping")
    return 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    supervisor = Supervisor(str(ROOT))
    supervisor.forward_signals()  # before anything starts: a Ctrl-C now is an event, not a traceback
    return run(args, supervisor)


if __name__ == "__main__":
    sys.exit(main())
