"""Benchmark: the model server with 1, 8 and 32 requests in flight, gRPC and REST, batching off and on,
the SavedModel and the TFLite runtime.

    make bench-serve            (or: .venv/bin/python bench/serve.py [--seconds 5] [--model-base-path DIR])

One image per request, back to back, for a fixed time, from C load generators (h2load, wrk; bench/load.py)
that share the machine's two cores with the server at a small fraction of a core. Each cell records the
server's and the generator's CPU share. The ceilings: the same signature called in-process, in TensorFlow
and in LiteRT, at batch 1 and batch 64. Writes bench/results/serve.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import PREDICT_PATH, ensure_tools, h2load_grpc, wrk_rest  # noqa: E402
from bench.machine import cpu_seconds, describe_machine  # noqa: E402
from contract import model_dir  # noqa: E402
from contract.signature import SIGNATURE_NAME, scale_pixels  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "serve.json"
REST_URL = "http://127.0.0.1:18601/v1/models/mnist:predict"
IN_FLIGHT = (1, 8, 32)


def in_process_ceiling(version_dir: Path, image: np.ndarray, seconds: float) -> dict[str, float]:
    from tfquiet import import_tensorflow

    import_tensorflow()
    import tensorflow as tf

    signature = tf.saved_model.load(str(version_dir)).signatures[SIGNATURE_NAME]
    result = {}
    for batch in (1, 64):
        images = tf.constant(np.repeat(image, batch, axis=0))
        for _ in range(20):
            signature(images=images)
        calls, began = 0, time.monotonic()
        while time.monotonic() - began < seconds:
            signature(images=images)
            calls += 1
        result[f"batch_{batch}_images_per_s"] = round(calls * batch / (time.monotonic() - began), 1)
    result |= litert_ceiling(version_dir / model_dir.TFLITE_FILE, image, seconds)
    return result


def litert_ceiling(path: Path, image: np.ndarray, seconds: float) -> dict[str, float]:
    """model.tflite in LiteRT: batch 1 on one interpreter, batch 64 on one interpreter per core at once
    (LiteRT releases the GIL while it computes)."""
    cores = os.cpu_count() or 1
    return {
        "litert_batch_1_images_per_s": litert_images_per_s(path, image, 1, seconds),
        "litert_batch_64_images_per_s": litert_images_per_s(
            path, np.repeat(image, 64, axis=0), cores, seconds
        ),
    }


def litert_images_per_s(path: Path, images: np.ndarray, interpreters: int, seconds: float) -> float:
    from ai_edge_litert.interpreter import Interpreter

    runners = [
        Interpreter(str(path), num_threads=1).get_signature_runner(SIGNATURE_NAME)
        for _ in range(interpreters)
    ]
    for runner in runners:
        runner(images=images)  # the delegate is applied at the first call
    began = time.monotonic()

    def calls_of(runner: Any) -> int:
        calls = 0
        while time.monotonic() - began < seconds:
            runner(images=images)
            calls += 1
        return calls

    with ThreadPoolExecutor(interpreters) as pool:
        total = sum(pool.map(calls_of, runners))
    return round(total * len(images) / (time.monotonic() - began), 1)


def wait_available(rest_url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {process.stderr.read() if process.stderr else ''}")
        try:
            states = requests.get(f"{rest_url}/v1/models/mnist", timeout=1).json()["model_version_status"]
            if any(s["state"] == "AVAILABLE" for s in states):
                return
        except (requests.RequestException, KeyError, ValueError):
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not make the model AVAILABLE in time")


def bench_server(
    base_path: Path, batching: bool, tflite: bool, payloads: dict[str, bytes], seconds: float
) -> dict[str, dict]:
    flags = [
        f"--model_base_path={base_path}",
        "--model_name=mnist",
        "--host=127.0.0.1",
        "--port=18600",
        "--rest_api_port=18601",
        "--tensorflow_intra_op_parallelism=1",  # as docker-compose.yml runs it
    ]
    if batching:
        flags += [
            "--enable_batching",
            f"--batching_parameters_file={ROOT / 'serving' / 'config' / 'batching.config'}",
        ]
    if tflite:  # as docker-compose.yml runs it
        flags += ["--prefer_tflite_model", "--num_tflite_pools=2"]
    server = subprocess.Popen(
        [sys.executable, "-m", "serving", *flags], cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_available("http://127.0.0.1:18601", server)
        check_answers(payloads)
        results: dict[str, dict] = {"grpc": {}, "rest": {}}
        for api in ("grpc", "rest"):
            for in_flight in IN_FLIGHT:
                cpu_before = cpu_seconds(server.pid)
                if api == "grpc":
                    figures = h2load_grpc("127.0.0.1:18600", payloads["grpc"], in_flight, seconds)
                else:
                    figures = wrk_rest(REST_URL, payloads["rest"], in_flight, seconds)
                # Warm-up second included: a close upper bound on the measured seconds' share.
                figures["server_cpu"] = round((cpu_seconds(server.pid) - cpu_before) / (seconds + 1), 2)
                results[api][f"clients_{in_flight}"] = figures
                mode = cell_name(batching, tflite)
                print(f"{api:4} {mode:18} in flight {in_flight:2}: {figures}", file=sys.stderr, flush=True)
        return results
    finally:
        server.terminate()
        server.wait(30)


def check_answers(payloads: dict[str, bytes]) -> None:
    """The load generators count HTTP statuses only (gRPC's own sits in a trailer): a real client
    checks first that the server answers these very requests."""
    import grpc

    from tfs_api.tensorflow_serving.apis import predict_pb2

    with grpc.insecure_channel("127.0.0.1:18600") as channel:
        reply = channel.unary_unary(PREDICT_PATH)(payloads["grpc"], timeout=10)
    assert "probabilities" in predict_pb2.PredictResponse.FromString(reply).outputs
    assert "predictions" in requests.post(REST_URL, data=payloads["rest"], timeout=10).json()


def cell_name(batching: bool, tflite: bool) -> str:
    """no_batching, batching: the SavedModel answers; the same with _tflite: model.tflite in LiteRT."""
    return ("batching" if batching else "no_batching") + ("_tflite" if tflite else "")


def quick_model(scratch: Path) -> Path:
    """A `plus` model trained for seconds: serving speed depends on the network, not on its weights."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "--arch",
            "plus",
            "--limit",
            "1000",
            "--epochs",
            "1",
            "--model-dir",
            str(scratch),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return scratch / "mnist"


def payloads_for(image: np.ndarray) -> dict[str, bytes]:
    from tfquiet import import_tensorflow

    import_tensorflow()
    import tensorflow as tf

    from tfs_api.tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(image))
    return {"grpc": request.SerializeToString(), "rest": json.dumps({"instances": image.tolist()}).encode()}


def load_flags(doc: str, seconds: float, per: str, rounds: int | None = None) -> argparse.Namespace:
    """The flags of a benchmark that loads the server: --seconds and --model-base-path (and --rounds,
    where it has them)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--seconds", type=float, default=seconds, help=f"seconds per {per} (default {seconds:g})"
    )
    if rounds is not None:
        parser.add_argument(
            "--rounds", type=int, default=rounds, help=f"each cell this often (default {rounds})"
        )
    parser.add_argument("--model-base-path", type=Path, help="default: a quick `plus` model in a temp dir")
    args = parser.parse_args()
    ensure_tools()
    return args


def first_test_image() -> np.ndarray:
    """MNIST's first test digit as the model takes it: one image a request."""
    from trainer.data import load_pair

    return scale_pixels(load_pair(ROOT / "data" / "mnist", "t10k", verify=False).images[:1])


def main() -> None:
    args = load_flags(__doc__ or "", 5.0, "cell")

    image = first_test_image()
    with tempfile.TemporaryDirectory() as scratch:
        base_path = args.model_base_path or quick_model(Path(scratch))
        version_dir = base_path / str(model_dir.versions(base_path)[-1])
        results: dict[str, Any] = {"in_process": in_process_ceiling(version_dir, image, args.seconds)}
        print(f"in-process: {results['in_process']}", file=sys.stderr, flush=True)
        payloads = payloads_for(image)
        for tflite in (False, True):
            for batching in (False, True):
                for api, cells in bench_server(base_path, batching, tflite, payloads, args.seconds).items():
                    results.setdefault(api, {})[cell_name(batching, tflite)] = cells
    results["setup"] = {
        "machine": describe_machine(),
        "model": "plus (same network as the default model)",
        "seconds_per_cell": args.seconds,
        "server_flags": "--tensorflow_intra_op_parallelism=1, as docker-compose.yml runs the server; "
        "*_tflite cells add --prefer_tflite_model --num_tflite_pools=2, as it does too",
        "load_generator": "h2load (gRPC: at most 4 HTTP/2 connections, the rest as concurrent streams) and "
        "wrk (REST: one keep-alive connection per request in flight), on the same cores as the server; "
        "CPU shares in cores (1.0 = one core busy)",
        "batching_parameters": (ROOT / "serving" / "config" / "batching.config")
        .read_text()
        .split("\n# ")[-1]
        .strip(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
