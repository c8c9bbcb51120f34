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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.serve import quick_model  # noqa: E402
from client import ServingClient, ServingClientError  # noqa: E402
from stack.compose import server_flags  # noqa: E402
from tfs_api.tensorflow.core.framework import types_pb2  # noqa: E402
from tfs_api.tensorflow_serving.apis import (  # noqa: E402
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
)

RESULTS = ROOT / "bench" / "results" / "drill.json"
STALL_S = 1.0  # the slowest single-image predict allowed while an attack runs (a few ms when idle)
MEMORY_BUDGET = 2 << 30  # how far the server's and its parser's memory together may rise in an attack
LOG_BUDGET = 2048  # bytes of log an attack may cause: a line or two, never a line per request
TIMEOUT_MS = 3000
PREDICT = "/tensorflow.serving.PredictionService/Predict"


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


class AttackFailed(Exception):
    """The server answered an attack wrongly."""


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    grpc_port: int
    rest_port: int
    log: Path

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def memory_bytes(self) -> int:
        """Resident memory of the server and its children (the JSON parsing process)."""
        total = 0
        for pid in (self.process.pid, *_children(self.process.pid)):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            total += next(
                int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS")
            )
        return total

    def serves_mnist(self, image: np.ndarray) -> bool:
        try:
            ServingClient.rest(self.rest, retries=0, timeout=10).predict(image)
            ServingClient.grpc(f"127.0.0.1:{self.grpc_port}", retries=0, timeout=10).predict(image)
        except ServingClientError:
            return False
        return True


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


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

    def reset(self) -> None:
        self.slowest, self.failures = 0.0, []
        self.baseline = self.peak = self.server.memory_bytes()

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

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.server.memory_bytes())


# ---- the attacks: each returns what the server answered, raising AttackFailed when that was wrong ----


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise AttackFailed(what)


def rest_post(server: Server, path: str, body: bytes) -> requests.Response:
    return requests.post(server.rest + path, data=body, timeout=60)


def image_rows(image: np.ndarray, count: int) -> bytes:
    """A REST predict body of `count` copies of the image, as rows: built by joining, not by json."""
    row = json.dumps(image[0].round(3).tolist()).encode()
    return b'{"instances": [' + b",".join([row] * count) + b"]}"


def large_json(server: Server, image: np.ndarray) -> str:
    body = image_rows(image, 17_300)  # about 120 MB
    reply = rest_post(server, "/v1/models/mnist:predict", body)
    # 400 with the compose flags: more images than a batch (64) may hold, refused once parsed.
    expect(reply.ok or (reply.status_code == 400 and "Task size" in reply.text), reply.text[:200])
    return f"{len(body) >> 20} MiB of JSON: {reply.status_code} {reply.text[:80]!r}"


def stalled_bodies(server: Server, image: np.ndarray) -> str:
    small = image_rows(image, 1)
    with (
        socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as stated,
        socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as chunked,
    ):
        stated.sendall(
            b"POST /v1/models/mnist:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 268435456\r\n\r\n{"
        )
        chunked.sendall(
            b"POST /v1/models/mnist:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        codes = [rest_post(server, "/v1/models/mnist:predict", small).status_code for _ in range(20)]
        expect(codes == [200] * 20, f"other predictions got {codes}")
        deadline = time.monotonic() + TIMEOUT_MS / 1000 + 5
        chunked.settimeout(0.1)
        while time.monotonic() < deadline:  # a body that never ends: a chunk every 100 ms
            try:
                chunked.sendall(b"400\r\n" + b" " * 1024 + b"\r\n")
                if chunked.recv(65536):
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        stated.settimeout(10)
        answer = stated.recv(65536)
    expect(answer.startswith(b"HTTP/1.1 408"), f"a stalled body got {answer[:40]!r}")
    return "a 256 MiB body stalled after 1 byte, a chunked one never ending: 408 and closed; 20 others 200"


def empty_batches(server: Server, image: np.ndarray) -> str:
    client = ServingClient.grpc(f"127.0.0.1:{server.grpc_port}", retries=0, timeout=10)
    answers = [len(client.predict(image[:0])) for _ in range(2000)]
    expect(set(answers) == {0}, f"empty batches were answered {set(answers)}")
    return "2000 gRPC predicts of shape [0,28,28,1]: empty answers"


def unknown_names(server: Server, image: np.ndarray) -> str:
    body = image_rows(image, 1)
    with requests.Session() as session:
        codes = {
            session.post(f"{server.rest}/v1/models/x{i}:predict", data=body, timeout=10).status_code
            for i in range(2000)
        }
    expect(codes == {404}, f"unknown names got {codes}")
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        for i in range(50):
            request = _predict_request(image, name=f"{i}" + "n" * 100_000)
            try:
                channel.unary_unary(PREDICT)(request, timeout=10)
            except grpc.RpcError as err:
                expect(err.code() == grpc.StatusCode.NOT_FOUND, str(err.code()))
    page = requests.get(f"{server.rest}/monitoring/prometheus/metrics", timeout=10).text
    expect(len(page) < 256 << 10, f"the metrics page is {len(page)} bytes")
    return f"2000 unknown names (REST), 50 of 100 KB (gRPC): 404 / NOT_FOUND; metrics page {len(page)} B"


def _predict_request(image: np.ndarray, name: str = "mnist", content: bytes | None = None) -> bytes:
    """A serialized PredictRequest, built without TensorFlow: float32 images as tensor_content."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    tensor = request.inputs["images"]
    tensor.dtype = types_pb2.DT_FLOAT
    data = image.astype(np.float32).tobytes() if content is None else content
    for size in (len(data) // (28 * 28 * 4), 28, 28, 1):
        tensor.tensor_shape.dim.add().size = size
    tensor.tensor_content = data
    return request.SerializeToString()


def huge_grpc(server: Server, image: np.ndarray) -> str:
    request = _predict_request(image, content=bytes(300 << 20))
    codes = []

    def send(_: int) -> None:
        with grpc.insecure_channel(
            f"127.0.0.1:{server.grpc_port}", options=[("grpc.max_send_message_length", -1)]
        ) as channel:
            try:
                channel.unary_unary(PREDICT)(request, timeout=60)
                codes.append("OK")
            except grpc.RpcError as err:
                codes.append(err.code().name)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(send, range(6)))
    expect(set(codes) == {"RESOURCE_EXHAUSTED"}, f"300 MB predicts got {codes}")
    return "6 concurrent gRPC predicts of 300 MB: RESOURCE_EXHAUSTED"


def reload_calls(server: Server, image: np.ndarray) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        outside = model_management_pb2.ReloadConfigRequest()
        for base_path in ("/etc", "/proc/self"):
            model = outside.config.model_config_list.config.add()
            model.name, model.base_path, model.model_platform = "mnist", base_path, "tensorflow"
            try:
                stub.HandleReloadConfigRequest(outside, timeout=10)
                raise AttackFailed(f"a reload to {base_path} was accepted")
            except grpc.RpcError as err:
                expect(err.code() == grpc.StatusCode.PERMISSION_DENIED, str(err.code()))
            del outside.config.model_config_list.config[:]
        empty = model_management_pb2.ReloadConfigRequest()
        empty.config.model_config_list.SetInParent()
        stub.HandleReloadConfigRequest(empty, timeout=60)
    gone = time.monotonic()
    while not server.serves_mnist(image):  # the watched config file wins again at its next poll
        expect(time.monotonic() - gone < 60, "mnist did not come back after an empty reload")
        time.sleep(0.5)
    return (
        f"reloads to /etc and /proc: PERMISSION_DENIED; an empty one unloaded mnist for "
        f"{time.monotonic() - gone:.0f} s, until the config file's next poll"
    )


def deep_json(server: Server, image: np.ndarray) -> str:
    codes, messages = set(), set()
    for depth in (65, 300, 1022, 5000):
        for key in ("instances", "inputs"):
            body = f'{{"{key}": ' + "[" * depth + "0.5" + "]" * depth + "}"
            reply = rest_post(server, "/v1/models/mnist:predict", body.encode())
            codes.add(reply.status_code)
            messages.add(bool(reply.json().get("error")))
    expect(codes == {400} and messages == {True}, f"deep JSON got {codes}, messages {messages}")
    return "JSON nested 65 to 5000 deep, rows and columns: 400 with a message"


def odd_tensors(server: Server, image: np.ndarray) -> str:
    found = []
    odd = ((types_pb2.DT_FLOAT, 100), (types_pb2.DT_VARIANT, 1), (types_pb2.DT_RESOURCE, 1))
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        for dtype, rank in odd:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "mnist"
            tensor = request.inputs["images"]
            tensor.dtype = dtype
            for _ in range(rank):
                tensor.tensor_shape.dim.add().size = 1
            try:
                channel.unary_unary(PREDICT)(request.SerializeToString(), timeout=10)
                found.append("OK")
            except grpc.RpcError as err:
                found.append(err.code().name)
    expect(set(found) == {"INVALID_ARGUMENT"}, f"odd tensors got {found}")
    return "a rank-100 tensor, DT_VARIANT, DT_RESOURCE: INVALID_ARGUMENT"


def huge_headers(server: Server, image: np.ndarray) -> str:
    answers = []
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as connection:
            connection.sendall(b"GET /v1/models/mnist HTTP/1.1\r\nX-Big: ")
            try:
                for _ in range(20 * 16):  # up to 20 MB, 64 KiB at a time, until the server closes
                    connection.sendall(b"a" * (64 << 10))
            except OSError:
                pass
            try:
                answers.append(connection.recv(64)[:12])
            except OSError:
                answers.append(b"reset")
    expect(all(a in (b"HTTP/1.1 431", b"reset", b"") for a in answers), f"huge headers got {answers}")
    return "10 connections sending 20 MB headers: 431 and closed"


ATTACKS: list[Callable[[Server, np.ndarray], str]] = [
    large_json,
    stalled_bodies,
    empty_batches,
    unknown_names,
    huge_grpc,
    reload_calls,
    deep_json,
    odd_tensors,
    huge_headers,
]


def start(model_dir: Path, log: Path) -> Server:
    grpc_port, rest_port = _free_port(), _free_port()
    flags = server_flags(
        ROOT / "docker-compose.yml", model_dir, {"port": grpc_port, "rest_api_port": rest_port}
    )
    flags.append(f"--rest_api_timeout_in_ms={TIMEOUT_MS}")
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
            logged = server.log.stat().st_size - logged_before
            figures = {
                "attack": attack.__name__,
                "answered": answered,
                "seconds": round(time.monotonic() - started, 1),
                "slowest_probe_s": round(watch.slowest, 3),
                "memory_rise_mb": watch.rise >> 20,
                "logged_bytes": logged,
            }
            if attack is not reload_calls and watch.slowest > STALL_S:
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
