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
import socket
import sys
import threading
from pathlib import Path

import requests

from stack.compose import ComposeError, server_flags
from stack.supervisor import Exited, Part, Supervisor
from trainer.versions import numeric_versions

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
MODEL_CONFIG_FILE = ROOT / "serving" / "config" / "models.config"
MODEL_NAME = "mnist"  # as serving/config/models.config names it

EXAMPLES = """examples:
  make up                                       the same as: python -m stack
  TRAIN_ARGS="--arch seed --limit 5000 --epochs 2" make up
                                                a quick first model (about 10 s)
  VERBOSE=1 make up                             every part's own logging too
  MODEL_DIR=/tmp/models make up                 another model directory
  RETRAIN=1 make up                             train a new version even though one exists
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
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
    parser.add_argument("--verbose", action="store_true", help="show every part's own logging")
    return parser.parse_args(argv)


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def build_parts(args: argparse.Namespace, train: bool) -> list[Part]:
    ports = {"port": args.grpc_port, "rest_api_port": args.rest_port}
    verbose = ["--verbose"] if args.verbose else []
    parts = [
        Part(
            "serving", [sys.executable, "-m", "serving", *server_flags(COMPOSE_FILE, args.model_dir, ports)]
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
            ],
            env={
                "MODEL_DIR": str(args.model_dir.resolve()),
                "MODEL_NAME": MODEL_NAME,
                "MODEL_CONFIG_FILE": str(MODEL_CONFIG_FILE),
                "SERVING_GRPC": f"localhost:{args.grpc_port}",
                "SERVING_REST": f"http://localhost:{args.rest_port}",
            },
            echo=args.verbose,  # Streamlit's own banner names addresses that are not the ones to open
        ),
    ]
    parts[0].argv += verbose
    if train:
        trainer = [sys.executable, "-m", "trainer", "--model-dir", str(args.model_dir), *verbose]
        parts.append(
            Part(
                "trainer",
                trainer + shlex.split(args.train_args),
                essential=False,
                stop_signal=signal.SIGINT,  # the trainer's clean stop: no version exported
            )
        )
    return parts


def announce(supervisor: Supervisor, args: argparse.Namespace, stopping: threading.Event) -> None:
    """Print the addresses once the dashboard answers, and each version as it becomes the served one."""
    health = f"http://127.0.0.1:{args.dashboard_port}/_stcore/health"
    status = f"http://127.0.0.1:{args.rest_port}/v1/models/{MODEL_NAME}"
    announced, serving = False, None
    while not stopping.wait(0.5):
        if not announced and _answers(health):
            announced = True
            for line in (
                f"dashboard  http://localhost:{args.dashboard_port}",
                f"REST       http://localhost:{args.rest_port}/v1/models/{MODEL_NAME}",
                f"gRPC       localhost:{args.grpc_port}",
                "Ctrl-C stops everything",
            ):
                supervisor.say("stack", line)
        latest = _latest_available(status)
        if latest is not None and latest != serving:
            serving = latest
            supervisor.say("stack", f"{MODEL_NAME} version {latest} is AVAILABLE")


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


def _latest_available(url: str) -> int | None:
    try:
        reply = requests.get(url, timeout=2)
        versions = [
            int(v["version"]) for v in reply.json()["model_version_status"] if v["state"] == "AVAILABLE"
        ]
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return None
    return max(versions, default=None)


def run(args: argparse.Namespace) -> int:
    busy = [p for p in (args.grpc_port, args.rest_port, args.dashboard_port) if port_in_use(p)]
    if busy:
        print(
            f"error: port {busy[0]} is in use (another `make up`?): stop what holds it, or choose other "
            "ports with GRPC_PORT, REST_PORT and DASHBOARD_PORT",
            file=sys.stderr,
        )
        return 2
    base_path = args.model_dir / MODEL_NAME
    train = not numeric_versions(base_path) or os.environ.get("RETRAIN") == "1"
    try:
        base_path.mkdir(parents=True, exist_ok=True)  # the server waits on it quietly, not "not found"
    except OSError as err:
        print(f"error: cannot create the model directory {base_path}: {err.strerror}", file=sys.stderr)
        return 2
    try:
        parts = build_parts(args, train)
    except ComposeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    supervisor = Supervisor(str(ROOT))
    supervisor.forward_signals()
    for part in parts:
        supervisor.start(part)
    if train:
        supervisor.say(
            "stack", f"training a version into {base_path} in the background; the dashboard shows it live"
        )
    else:
        supervisor.say("stack", f"serving the newest version in {base_path} (RETRAIN=1 trains another)")
    stopping = threading.Event()
    threading.Thread(target=announce, args=(supervisor, args, stopping), daemon=True).start()

    try:
        code = watch(supervisor, base_path)
    finally:  # whatever happened above, nothing is left running
        stopping.set()
        supervisor.stop_all(parts)
    supervisor.say("stack", "stopped")
    return code


def watch(supervisor: Supervisor, base_path: Path) -> int:
    """Until a signal, or an exit that ends the stack: the stack's exit code."""
    while True:
        event = supervisor.next_event()
        if isinstance(event, int):
            supervisor.say("stack", "stopping...")
            return 0
        code = report_exit(supervisor, event, base_path)
        if code is not None:
            return code


def report_exit(supervisor: Supervisor, event: Exited, base_path: Path) -> int | None:
    """What an exit means: None to keep going, or the stack's exit code."""
    part, code = event.part, event.returncode
    if not part.echo:
        for line in event.last_lines:
            supervisor.say(part.name, line)
    if part.essential:
        supervisor.say("stack", f"{part.name} stopped unexpectedly (exit {code}); stopping the rest")
        return 1
    if code == 0:
        supervisor.say("stack", "trainer done; the server takes the new version within seconds")
        return None
    if numeric_versions(base_path):
        supervisor.say("stack", f"trainer failed (exit {code}); the previous version keeps serving")
        return None
    supervisor.say("stack", f"trainer failed (exit {code}) and there is no model to serve; stopping")
    return 1


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
