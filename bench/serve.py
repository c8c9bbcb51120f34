"""Benchmark: the model server under 1, 8 and 32 concurrent clients, gRPC and REST, batching off and on.

    make bench-serve            (or: .venv/bin/python bench/serve.py [--seconds 5] [--model-base-path DIR])

Each client sends one image per request, back to back, for a fixed time. Clients run as threads spread
over several processes (spawned, without TensorFlow: gRPC requests are sent pre-serialised), so the
Python client is not the bottleneck; they share the machine's cores with the server, as they would on a
laptop. The ceiling is the same SavedModel signature called in-process at batch 1 and batch 64.
Writes bench/results/serve.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import requests

from contract import model_dir
from contract.signature import SIGNATURE_NAME, scale_pixels

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "serve.json"
CLIENTS = (1, 8, 32)
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
JSON_HEADERS = {"Content-Type": "application/json"}


def client_process(
    api: str, target: str, payload: bytes, threads: int, warmup_s: float, seconds: float
) -> dict:
    """One load-generating process: `threads` clients sending `payload` until the time is up."""
    import grpc

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    start = time.monotonic() + warmup_s
    stop = start + seconds

    def run() -> None:
        mine: list[float] = []
        failed = 0
        if api == "grpc":
            channel = grpc.insecure_channel(target)
            call = channel.unary_unary(PREDICT_METHOD)  # bytes in, bytes out
        else:  # http.client, not requests: a keep-alive connection at a fraction of the client CPU
            url = urllib.parse.urlsplit(target)
            connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
        while (now := time.monotonic()) < stop:
            try:
                if api == "grpc":
                    call(payload, timeout=10)
                    ok = True
                else:
                    connection.request("POST", url.path, body=payload, headers=JSON_HEADERS)
                    reply = connection.getresponse()
                    reply.read()
                    ok = reply.status == 200
            except Exception:
                ok = False
                if api != "grpc":
                    connection.close()  # the next request opens a new one
            if now >= start:
                mine.append(time.monotonic() - now)
                failed += not ok
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return {"latencies": latencies, "errors": errors[0]}


def measure(api: str, target: str, payload: bytes, clients: int, seconds: float) -> dict[str, float]:
    processes = min(clients, 4)
    shares = [clients // processes + (i < clients % processes) for i in range(processes)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = pool.starmap(client_process, [(api, target, payload, n, 1.0, seconds) for n in shares])
    latencies = np.array([x for part in parts for x in part["latencies"]]) * 1000
    return {
        "requests_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "errors": sum(part["errors"] for part in parts),
    }


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
        flags += ["--prefer_tflite_model", "--num_tflite_interpreters_per_pool=2"]
    server = subprocess.Popen(
        [sys.executable, "-m", "serving", *flags], cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_available("http://127.0.0.1:18601", server)
        targets = {"grpc": "127.0.0.1:18600", "rest": "http://127.0.0.1:18601/v1/models/mnist:predict"}
        results: dict[str, dict] = {"grpc": {}, "rest": {}}
        for api in ("grpc", "rest"):
            for clients in CLIENTS:
                figures = measure(api, targets[api], payloads[api], clients, seconds)
                results[api][f"clients_{clients}"] = figures
                mode = cell_name(batching, tflite)
                print(f"{api:4} {mode:18} clients {clients:2}: {figures}", file=sys.stderr, flush=True)
        return results
    finally:
        server.terminate()
        server.wait(30)


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
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(image))
    return {"grpc": request.SerializeToString(), "rest": json.dumps({"instances": image.tolist()}).encode()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell (default 5)")
    parser.add_argument("--model-base-path", type=Path, help="default: a quick `plus` model in a temp dir")
    args = parser.parse_args()
    from bench.machine import describe_machine
    from trainer.data import load_pair

    image = scale_pixels(load_pair(ROOT / "data" / "mnist", "t10k", verify=False).images[:1])
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
        "*_tflite cells add --prefer_tflite_model --num_tflite_interpreters_per_pool=2, as it does too",
        "load_generator": "1-4 spawned processes of client threads on the same cores as the server; "
        "gRPC requests pre-serialised, REST bodies pre-encoded JSON",
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
