"""The hostile-client drill: the model server, started with docker-compose.yml's flags on loopback, taken
through the attacks of the hardening issue one after another, as a bounded attacker would.

    make drill                               # a model trained for seconds, in a scratch directory
    python bench/drill.py --model-dir models # the model directory `make up` serves

Every attack is bounded in count and time (the whole drill takes a minute or two). Meanwhile a probe
sends single-image gRPC predictions without pause. One line per attack: what was sent, what came back,
the slowest probe meanwhile, how far the server's memory (its own and its JSON parser's) rose, and how
much it logged. The drill fails (exit 1) when an attack got a wrong answer, stalled the probe past
STALL_S, raised memory past MEMORY_BUDGET, made the server log per request, or left `mnist` unserved.
Figures go to bench/results/drill.json. The request timeout is cut to 3 s (the compose file leaves TF
Serving's 30 s) so that stalled clients are timed out within the drill.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.attacks import ATTACKS, reload_calls  # noqa: E402
from bench.drill_target import TIMEOUT_MS, AttackFailed, Server  # noqa: E402
from bench.http2_attacks import stalled_calls  # noqa: E402
from bench.serve import quick_model  # noqa: E402
from client import ServingClient, ServingClientError  # noqa: E402
from stack.compose import server_flags  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "drill.json"
STALL_S = 1.0  # the slowest single-image predict allowed while an attack runs (a few ms when idle)
# ... except while 10,000 gRPC calls left unsent (stalled_calls) wait in gRPC's queue of calls the
# server's loop has not taken yet: it takes them one at a time, so the probe's call waits behind them
# (0.8-1.3 s on a 2-core AMD EPYC with the drill alone; 20,000 such calls held it 2.6-5.9 s).
STALLED_CALLS_STALL_S = 5.0
SETTLE_S = 5.0  # how long past its allowance a probe's predict may take to answer once an attack ends
MEMORY_BUDGET = 2 << 30  # how far the server's and its parser's memory together may rise in an attack
LOG_BUDGET = 2048  # bytes of log an attack may cause: a line or two, never a line per request


# Single-image gRPC predictions without pause, a line each: seconds taken, then the error if any.
PROBE = """
import sys, time
import numpy as np
from client import ServingClient, ServingClientError
client = ServingClient.grpc(sys.argv[1], retries=0, timeout=20)
image = np.zeros((28, 28, 1), np.float32)
while True:
    started, error = time.monotonic(), ""
    try:
        client.predict(image)
    except ServingClientError as err:
        error = str(err).replace("\\n", " ")
    print(f"{time.monotonic() - started:.4f} {error}", flush=True)
    time.sleep(0.02)
"""


@dataclass
class Watch:
    """The probe's slowest predict and the highest memory seen, from `reset` on; sampled every 20 ms."""

    server: Server
    image: np.ndarray
    slowest: float = 0.0
    baseline: int = 0
    peak: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _answered: threading.Condition = field(default_factory=threading.Condition)
    _answers: int = 0

    def reset(self) -> None:
        self.slowest, self.failures = 0.0, []
        self.baseline = self.peak = self.server.memory_bytes()

    def settled(self, within_s: float) -> bool:
        """Whether the probe answers a predict started from now on, within `within_s`: its slowest
        then counts the predict an attack held until after it returned, too."""
        with self._answered:
            wanted = self._answers + 2  # the predict in flight now, then one started after it
            return self._answered.wait_for(lambda: self._answers >= wanted, within_s)

    @property
    def rise(self) -> int:
        return max(0, self.peak - self.baseline)

    @contextmanager
    def running(self) -> Iterator[None]:
        # The probe is a process of its own: in this one, the attackers' threads (copying 300 MB
        # messages, say) would hold Python's lock, and the probe would time the attacker, not the server.
        probe = subprocess.Popen(
            [sys.executable, "-c", PROBE, f"127.0.0.1:{self.server.grpc_port}"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        threads = [
            threading.Thread(target=self._listen, args=(probe,)),
            threading.Thread(target=self._sample),
        ]
        for thread in threads:
            thread.start()
        try:
            yield
        finally:
            self._stop.set()
            probe.terminate()
            probe.wait(30)
            for thread in threads:
                thread.join(30)

    def _listen(self, probe: subprocess.Popen[str]) -> None:
        """The probe's lines: each predict's seconds, or what went wrong."""
        assert probe.stdout is not None
        for line in probe.stdout:
            seconds, _, error = line.rstrip("\n").partition(" ")
            self.slowest = max(self.slowest, float(seconds))
            if error:
                self.failures.append(error)
            with self._answered:
                self._answers += 1
                self._answered.notify_all()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.server.memory_bytes())


def start(model_dir: Path, log: Path) -> Server:
    grpc_port, rest_port = _free_port(), _free_port()
    flags = server_flags(
        ROOT / "docker-compose.yml", model_dir, {"port": grpc_port, "rest_api_port": rest_port}
    )
    flags += [f"--rest_api_timeout_in_ms={TIMEOUT_MS}", f"--grpc_request_timeout_in_ms={TIMEOUT_MS}"]
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "serving", *flags], cwd=ROOT, stderr=sink)
    server = Server(process, grpc_port, rest_port, log)
    deadline = time.monotonic() + 120
    while not _available(server):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"drill: the server did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    return server


def _available(server: Server) -> bool:
    try:
        return any(v.state == "AVAILABLE" for v in ServingClient.rest(server.rest, retries=0).status())
    except ServingClientError:
        return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def drill(server: Server, image: np.ndarray) -> list[dict[str, object]]:
    results = []
    watch = Watch(server, image)
    with watch.running():
        for attack in ATTACKS:
            watch.reset()
            logged_before, started = server.log.stat().st_size, time.monotonic()
            problems = []
            try:
                answered = attack(server, image)
            except (AttackFailed, OSError, requests.RequestException, grpc.RpcError) as err:
                answered, problems = f"{type(err).__name__}: {err}", ["wrong answer"]
            allowed = STALLED_CALLS_STALL_S if attack is stalled_calls else STALL_S
            if not watch.settled(allowed + SETTLE_S):
                problems.append(f"the probe had no answer {allowed + SETTLE_S:g} s after the attack")
            logged = server.log.stat().st_size - logged_before
            figures = {
                "attack": attack.__name__,
                "answered": answered,
                "seconds": round(time.monotonic() - started, 1),
                "slowest_probe_s": round(watch.slowest, 3),
                "memory_rise_mb": watch.rise >> 20,
                "logged_bytes": logged,
            }
            if attack is not reload_calls and watch.slowest > allowed:
                problems.append(f"a predict waited {watch.slowest:.2f} s")
            if attack is not reload_calls and watch.failures:
                problems.append(f"{len(watch.failures)} probe predicts failed: {watch.failures[0]}")
            if watch.rise > MEMORY_BUDGET:
                problems.append(f"memory rose {watch.rise >> 20} MiB")
            if logged > LOG_BUDGET:
                problems.append(f"logged {logged} bytes")
            if not server.serves_mnist(image) or server.process.poll() is not None:
                problems.append("mnist is no longer served")
            figures["problems"] = problems
            results.append(figures)
            print(
                f"{'FAIL' if problems else 'ok  '} {attack.__name__:15} {answered} | slowest predict "
                f"{watch.slowest * 1000:.0f} ms, memory +{watch.rise >> 20} MiB, logged {logged} B"
                + (f" | {'; '.join(problems)}" if problems else ""),
                flush=True,
            )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/drill.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model-dir", type=Path, help="holds mnist/<version> (default: one trained for seconds)"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the figures go (JSON)")
    args = parser.parse_args(argv)
    from contract.signature import scale_pixels
    from trainer.data import load_pair

    image = scale_pixels(load_pair(ROOT / "data" / "mnist", "t10k", verify=False).images[:1])
    with tempfile.TemporaryDirectory(prefix="drill-") as scratch:
        model_dir = args.model_dir or quick_model(Path(scratch) / "models").parent
        server = start(model_dir, Path(scratch) / "server.log")
        try:
            results = drill(server, image)
        finally:
            server.process.terminate()
            server.process.wait(30)
    args.results.write_text(json.dumps({"attacks": results}, indent=2) + "\n")
    failed = [r["attack"] for r in results if r["problems"]]
    print(
        f"drill: {len(results) - len(failed)} of {len(results)} attacks held"
        + (f"; failed: {failed}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
