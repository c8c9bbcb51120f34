"""Benchmark notes: where the model server's time goes under load, sampled by py-spy (issue 24).

    make bench-profile      (or: .venv/bin/python bench/profile.py [--seconds 15] [--model-base-path DIR])

Starts the server as docker-compose.yml runs it (batching, model.tflite on two interpreters), loads it
with 32 requests in flight of one image each (wrk for REST, h2load for gRPC) and samples every thread
of it meanwhile. Writes bench/results/profile.json: per API, requests a second, the server's CPU per
request, and the functions holding the most samples, by their own time and with what they call.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import h2load_grpc, wrk_rest  # noqa: E402
from bench.machine import cpu_seconds, describe_machine  # noqa: E402
from bench.serve import (  # noqa: E402
    REST_URL,
    first_test_image,
    load_flags,
    payloads_for,
    quick_model,
    wait_available,
)

RESULTS = ROOT / "bench" / "results" / "profile.json"
SAMPLER = Path(sys.executable).parent / "py-spy"  # installed with the bench extra, beside this Python
IN_FLIGHT = 32
TOP = 20
FLAGS = [
    "--model_name=mnist",
    "--host=127.0.0.1",
    "--port=18600",
    "--rest_api_port=18601",
    "--enable_batching",
    f"--batching_parameters_file={ROOT / 'serving' / 'config' / 'batching.config'}",
    "--prefer_tflite_model",
    "--num_tflite_pools=2",
]


def where(frame: str) -> str:
    """A py-spy frame, `function (file:line)`, as `function (module file)`: lines of one function merged."""
    match = re.fullmatch(r"(.*) \((.*?)(?::\d+)?\)", frame)
    if match is None:
        return frame
    function, path = match.groups()
    return f"{function} ({'/'.join(Path(path).parts[-2:])})"


def hottest(raw: str) -> dict[str, list[tuple[str, float]]]:
    """From py-spy's collapsed stacks, the functions with the largest shares of all samples: by their
    own time (the stack's last frame) and inclusive of what they call (anywhere in the stack)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [where(frame) for frame in stack.split(";")]
        samples = int(count)
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    share = lambda counts: [(name, round(n / max(total, 1), 4)) for name, n in counts.most_common(TOP)]  # noqa: E731
    return {"own": share(own), "inclusive": share(inclusive)}


def profile(api: str, base_path: Path, payloads: dict[str, bytes], seconds: float, scratch: Path) -> dict:
    server = subprocess.Popen(
        [sys.executable, "-m", "serving", f"--model_base_path={base_path}", *FLAGS],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_available("http://127.0.0.1:18601", server)
        raw = scratch / f"{api}.txt"
        sampler = subprocess.Popen(
            [str(SAMPLER), "record", "--pid", str(server.pid), "--format", "raw", "--output", str(raw),
             "--duration", str(int(seconds)), "--rate", "200", "--threads", "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        cpu_before = cpu_seconds(server.pid)
        if api == "grpc":
            figures = h2load_grpc("127.0.0.1:18600", payloads["grpc"], IN_FLIGHT, seconds)
        else:
            figures = wrk_rest(REST_URL, payloads["rest"], IN_FLIGHT, seconds)
        cpu = cpu_seconds(server.pid) - cpu_before
        sampler.wait(timeout=seconds + 60)
        requests_served = figures["requests_per_s"] * seconds
        text = raw.read_text() if raw.exists() else ""
        # --threads puts each thread's name and id first in its stacks: merged here by name.
        text = re.sub(r"^thread \((0x[0-9A-Fa-f]+)\)", "thread", text, flags=re.MULTILINE)
        return {
            **figures,
            "server_cpu_ms_per_request": round(1000 * cpu / max(requests_served, 1), 3),
            "hottest": hottest(text),
        }
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    args = load_flags(__doc__ or "", 15.0, "API, sampled")

    payloads = payloads_for(first_test_image())
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as scratch:
        base_path = args.model_base_path or quick_model(Path(scratch))
        for api in ("rest", "grpc"):
            results[api] = profile(api, base_path, payloads, args.seconds, Path(scratch))
            cells = results[api]
            assert isinstance(cells, dict)
            rate, cost = cells["requests_per_s"], cells["server_cpu_ms_per_request"]
            print(f"{api}: {rate} req/s, {cost} ms of server CPU a request", file=sys.stderr, flush=True)
    results["setup"] = {
        "machine": describe_machine(),
        "in_flight": IN_FLIGHT,
        "seconds": args.seconds,
        "server_flags": " ".join(FLAGS[4:]),
        "sampler": "py-spy record --rate 200 --threads --nonblocking (shares of all samples of all threads)",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
