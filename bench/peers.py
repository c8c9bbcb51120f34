"""Benchmark: our model server against a C++ peer, Triton, side by side in one run (issue 24).

    make bench-peers
    (or: .venv/bin/python bench/peers.py [--seconds 10] [--rounds 2] [--model-base-path DIR])

Both serve the same `model.tflite` in LiteRT with the same batching file (up to 64 images, 2 ms, two
at a time; ours runs one fewer than the cores at a time, docs/tf-serving-compat.md). Ours runs as
docker-compose.yml runs it. Triton is the `tritonserver` that PyPI's nvidia-pytriton
bundles, with its Python backend running bench/triton_model.py (two instances, dynamic batching 64 /
2 ms), in .venv-peers (its client wants numpy 1); it listens on 127.0.0.1 only. Both are up for the
whole run, and each cell loads one of them: single-image requests for `--seconds` over REST (wrk) and
gRPC (h2load), 1, 8 and 32 connections, one request in flight on each; ours and Triton's cells
alternate, `--rounds` times. A third side, bench/floor.py, is our front doors' libraries answering
with no work at all: what grpc.aio and uvicorn alone cost a request. And the model alone: LiteRT's
CPU per image at batch 32 on one interpreter. A cell records requests/s, p50/p99, failures, and the
server's CPU per request (its processes and their children: Triton's backend stubs). Before the
load, both answer the same image with the same probabilities. Writes bench/results/peers.json and
prints a summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import PREDICT_PATH, h2load_grpc, wrk_rest  # noqa: E402
from bench.machine import cpu_seconds, describe_machine  # noqa: E402
from bench.profile import FLAGS as COMPOSE_FLAGS  # noqa: E402
from bench.serve import (  # noqa: E402
    first_test_image,
    litert_images_per_s,
    load_flags,
    payloads_for,
    quick_model,
    wait_available,
)
from contract import model_dir  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "peers.json"
PEER_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
CONNECTIONS = (1, 8, 32)
TRITON_INFER = "/inference.GRPCInferenceService/ModelInfer"
OURS = {"grpc": "127.0.0.1:18600", "rest": "http://127.0.0.1:18601/v1/models/mnist:predict"}
TRITON = {"grpc": "127.0.0.1:18800", "rest": "http://127.0.0.1:18801/v2/models/mnist/infer"}
# bench/floor.py: our front doors' libraries answering with no work
FLOOR_PORTS = (18650, 18651)
FLOOR = {
    "grpc": f"127.0.0.1:{FLOOR_PORTS[0]}",
    "rest": f"http://127.0.0.1:{FLOOR_PORTS[1]}/v1/models/mnist:predict",
}
# What our batching.config says, in Triton's words.
TRITON_CONFIG = """name: "mnist"
backend: "python"
max_batch_size: 64
input [ { name: "images", data_type: TYPE_FP32, dims: [ 28, 28, 1 ] } ]
output [
  { name: "probabilities", data_type: TYPE_FP32, dims: [ 10 ] },
  { name: "classes", data_type: TYPE_INT64, dims: [ 1 ] }
]
dynamic_batching { max_queue_delay_microseconds: 2000 }
instance_group [ { count: 2, kind: KIND_CPU } ]
"""


def start_ours(base_path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "serving", f"--model_base_path={base_path}", *COMPOSE_FLAGS],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )


def start_triton(tflite: Path, scratch: Path) -> subprocess.Popen:
    """tritonserver from the wheel, its Python backend given the stub for this Python (as PyTriton
    does), the model repository written here."""
    site = next((ROOT / ".venv-peers" / "lib").glob("python3.*/site-packages"))
    dist = site / "pytriton" / "tritonserver"
    backends = scratch / "backends"
    shutil.copytree(dist / "backends", backends)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    shutil.copy(dist / "python_backend_stubs" / version / "triton_python_backend_stub", backends / "python")
    model = scratch / "repository" / "mnist"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(TRITON_CONFIG)
    shutil.copy(ROOT / "bench" / "triton_model.py", model / "1" / "model.py")
    shutil.copy(tflite, model / "1" / model_dir.TFLITE_FILE)
    # The stub's embedded Python finds .venv-peers through the `python3` first on PATH; the copied stub
    # finds the wheel's libraries through LD_LIBRARY_PATH, as PyTriton starts it.
    env = {
        **os.environ,
        "PATH": f"{PEER_PYTHON.parent}:{os.environ['PATH']}",
        "LD_LIBRARY_PATH": str(site / "nvidia_pytriton.libs"),
    }
    log = (scratch / "triton.log").open("w")
    return subprocess.Popen(
        [
            str(dist / "bin" / "tritonserver"),
            f"--model-repository={model.parent}",
            f"--backend-directory={backends}",
            "--grpc-address=127.0.0.1",
            "--grpc-port=18800",
            "--http-address=127.0.0.1",
            "--http-port=18801",
            "--metrics-address=127.0.0.1",
            "--metrics-port=18802",
            "--log-info=false",
            "--exit-on-error=true",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_for_triton(server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"tritonserver exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(requests.RequestException):
            if requests.get("http://127.0.0.1:18801/v2/models/mnist/ready", timeout=1).ok:
                return
        time.sleep(0.2)
    raise SystemExit("Triton did not make the model ready in time")


@contextlib.contextmanager
def stopping(server: subprocess.Popen) -> Iterator[subprocess.Popen]:
    try:
        yield server
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


def start_floor() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "bench" / "floor.py"), *map(str, FLOOR_PORTS)])


def wait_for_floor() -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            requests.post(FLOOR["rest"], data=b"{}", timeout=1)  # REST listens after gRPC
            return
        time.sleep(0.1)
    raise SystemExit("bench/floor.py did not listen in time")


def peer(*args: str) -> str:
    return subprocess.run(
        [str(PEER_PYTHON), str(ROOT / "bench" / "triton_peer.py"), *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def same_answers(image_file: Path, image: np.ndarray) -> dict[str, Any]:
    """Each server's probabilities for the same image over each API, read by its own client library:
    the same model.tflite at the same batch size must give the same float32s."""
    from client.api import ServingClient

    rest_base = OURS["rest"].split("/v1")[0]
    ours = {
        "grpc": ServingClient.grpc(OURS["grpc"]).predict(image)[0].probabilities,
        "rest": ServingClient.rest(rest_base).predict(image)[0].probabilities,
    }
    triton_http = TRITON["rest"].removeprefix("http://").split("/")[0]
    theirs = json.loads(peer("answers", str(image_file), TRITON["grpc"], triton_http))
    every = [*ours.values(), *theirs.values()]
    if not all(np.array_equal(np.float32(every[0]), np.float32(other)) for other in every):
        raise SystemExit(f"the servers disagree: ours {ours}, Triton's {theirs}")
    return {"probabilities": list(every[0]), "identical_over_both_apis_and_servers": True}


@dataclasses.dataclass
class Side:
    """One server in the comparison: its process, addresses, requests, and gRPC method."""

    server: subprocess.Popen
    targets: dict[str, str]
    payloads: dict[str, bytes]
    grpc_method: str

    def cell(self, api: str, connections: int, seconds: float) -> dict[str, float]:
        """One cell of load, with the server's CPU per request."""
        before = cpu_seconds(self.server.pid)
        if api == "rest":
            figures = wrk_rest(self.targets["rest"], self.payloads["rest"], connections, seconds)
        else:
            figures = h2load_grpc(
                self.targets["grpc"], self.payloads["grpc"], connections, seconds,
                path=self.grpc_method, connections=connections,
            )  # fmt: skip
        cpu = cpu_seconds(self.server.pid) - before
        busy = seconds + (1 if api == "grpc" else 0)  # h2load first warms up for a second, wrk does not
        figures["server_cpu_ms_per_request"] = round(1000 * cpu / max(figures["requests_per_s"] * busy, 1), 3)
        figures["server_cpu"] = round(cpu / busy, 2)
        return figures


def summary(cells: dict[str, Any]) -> dict[str, Any]:
    """At 32 connections, each API: ours / Triton's throughput, CPU per request, p99 (mean of rounds),
    and the floor's CPU per request."""
    found: dict[str, Any] = {}
    for api in ("rest", "grpc"):
        mean = {
            name: {
                key: float(np.mean([r[key] for r in cells[name][api]["connections_32"]]))
                for key in ("requests_per_s", "server_cpu_ms_per_request", "p99_ms", "errors")
            }
            for name in ("ours", "triton")
        }
        found[api] = {
            **{f"{name}_{key}": round(v, 3) for name, figures in mean.items() for key, v in figures.items()},
            "throughput_ratio": round(mean["ours"]["requests_per_s"] / mean["triton"]["requests_per_s"], 3),
            "cpu_per_request_ratio": round(
                mean["ours"]["server_cpu_ms_per_request"] / mean["triton"]["server_cpu_ms_per_request"], 3
            ),
        }
        floor = cells["floor"][api]["connections_32"]
        found[api]["floor_server_cpu_ms_per_request"] = round(
            float(np.mean([r["server_cpu_ms_per_request"] for r in floor])), 3
        )
    return found


def main() -> None:
    args = load_flags(__doc__ or "", 10.0, "cell", rounds=2)
    if not PEER_PYTHON.exists():
        raise SystemExit("no .venv-peers: run `make bench-peers`, which installs Triton's wheel there")

    image = first_test_image()
    ours_payloads = payloads_for(image)
    cells: dict[str, Any] = {name: {"rest": {}, "grpc": {}} for name in ("ours", "triton", "floor")}
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        base_path = args.model_base_path or quick_model(scratch / "models")
        tflite = base_path / str(model_dir.versions(base_path)[-1]) / model_dir.TFLITE_FILE
        np.save(scratch / "image.npy", image)
        peer("payloads", str(scratch / "image.npy"), str(scratch))
        triton_payloads = {
            "grpc": (scratch / "grpc.bin").read_bytes(),
            "rest": (scratch / "rest.json").read_bytes(),
        }
        with contextlib.ExitStack() as running:
            # Each process is stopped on the way out, whichever of them fails to come up.
            ours = running.enter_context(stopping(start_ours(base_path)))
            triton = running.enter_context(stopping(start_triton(tflite, scratch)))
            floor = running.enter_context(stopping(start_floor()))
            wait_available("http://127.0.0.1:18601", ours)
            wait_for_triton(triton, scratch / "triton.log")
            wait_for_floor()
            answers = same_answers(scratch / "image.npy", image)
            images_per_s = litert_images_per_s(tflite, np.repeat(image, 32, axis=0), 1, 3.0)
            sides = {
                "ours": Side(ours, OURS, ours_payloads, PREDICT_PATH),
                "triton": Side(triton, TRITON, triton_payloads, TRITON_INFER),
                "floor": Side(floor, FLOOR, ours_payloads, PREDICT_PATH),
            }
            for round_ in range(args.rounds):
                for api in ("rest", "grpc"):
                    for connections in CONNECTIONS:
                        for name, side in sides.items():
                            figures = side.cell(api, connections, args.seconds)
                            cells[name][api].setdefault(f"connections_{connections}", []).append(figures)
                            print(
                                f"round {round_ + 1} {api:4} {connections:2} connections {name:6}: {figures}",
                                file=sys.stderr,
                                flush=True,
                            )
    results = {
        "summary_32_connections": summary(cells),
        **cells,
        "answers": answers,
        "model_alone": {"litert_batch_32_cpu_ms_per_image": round(1000 / images_per_s, 3)},
        "setup": {
            "machine": describe_machine(),
            "seconds_per_cell": args.seconds,
            "rounds": args.rounds,
            "ours": "python -m serving " + " ".join(COMPOSE_FLAGS[4:]),
            "triton": "tritonserver from nvidia-pytriton "
            + peer_version()
            + ", Python backend (bench/triton_model.py), LiteRT, two instances, dynamic batching 64 / 2 ms",
            "load": "wrk (REST) and h2load (gRPC), one connection per request in flight, on the same cores",
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["summary_32_connections"], indent=2))


def peer_version() -> str:
    return subprocess.run(
        [str(PEER_PYTHON), "-c", "import importlib.metadata as m; print(m.version('nvidia-pytriton'))"],
        capture_output=True,
        text=True,
    ).stdout.strip()


if __name__ == "__main__":
    main()
