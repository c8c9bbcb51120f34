"""Load from C generators, so the load costs little CPU beside the server: h2load for gRPC (requests framed
as gRPC messages over HTTP/2), wrk for REST (a Lua script for the POST). Both are Debian packages
(nghttp2-client, wrk), installed with apt when missing.

Each returns requests/s, p50/p99 latency, errors and the CPU share the generator itself used. Neither
reads gRPC's status trailer, so the benchmark checks answers separately with a real client.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

PREDICT_PATH = "/tensorflow.serving.PredictionService/Predict"
PACKAGES = {"h2load": "nghttp2-client", "wrk": "wrk"}


def ensure_tools() -> None:
    missing = sorted({package for tool, package in PACKAGES.items() if shutil.which(tool) is None})
    if missing:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def grpc_frame(message: bytes) -> bytes:
    """A gRPC message on the wire: uncompressed flag, 4-byte big-endian length, the bytes."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def h2load_grpc(
    target: str,
    request: bytes,
    in_flight: int,
    seconds: float,
    path: str = PREDICT_PATH,
    connections: int | None = None,
) -> dict[str, float]:
    """`in_flight` concurrent calls of `path` (TF Serving's Predict) for `seconds`, over `connections`
    HTTP/2 connections (default: at most 4, the rest as concurrent streams)."""
    connections = connections or min(in_flight, 4)
    with tempfile.TemporaryDirectory() as scratch:
        body, log = Path(scratch) / "request", Path(scratch) / "log"
        body.write_bytes(grpc_frame(request))
        output, cpu = _run(
            [
                "h2load",
                f"--clients={connections}",
                f"--max-concurrent-streams={max(in_flight // connections, 1)}",
                f"--duration={int(seconds)}",
                "--warm-up-time=1",
                f"--data={body}",
                f"--log-file={log}",
                "--header=content-type: application/grpc",
                "--header=te: trailers",
                f"http://{target}{path}",
            ]
        )
        # One request a line: start time, HTTP status, microseconds.
        rows = [line.split() for line in log.read_text().splitlines() if line.strip()]
    latencies_ms = np.array([int(row[2]) for row in rows]) / 1000
    errors = _number(r"(\d+) failed", output) + _number(r"(\d+) errored", output)
    errors += sum(row[1] != "200" for row in rows)
    p50, p99 = np.percentile(latencies_ms, [50, 99])
    return _figures(len(rows) / seconds, float(p50), float(p99), errors, cpu / seconds)


def wrk_rest(url: str, body: bytes, in_flight: int, seconds: float) -> dict[str, float]:
    """`in_flight` keep-alive connections POSTing `body` as JSON for `seconds`."""
    with tempfile.TemporaryDirectory() as scratch:
        payload, script = Path(scratch) / "body.json", Path(scratch) / "post.lua"
        payload.write_bytes(body)
        script.write_text(WRK_SCRIPT.replace("BODY_FILE", str(payload)))
        output, cpu = _run(
            [
                "wrk",
                f"--threads={min(in_flight, 2)}",
                f"--connections={in_flight}",
                f"--duration={int(seconds)}s",
                f"--script={script}",
                url,
            ]
        )
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    if found := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        errors += sum(map(int, found.groups()))
    rate = _number(r"(\d+) requests in", output) / seconds
    p50, p99 = _number(r"p50_us (\d+)", output) / 1000, _number(r"p99_us (\d+)", output) / 1000
    return _figures(rate, p50, p99, errors, cpu / seconds)


# POSTs the body file; at the end prints the latency percentiles wrk's own summary leaves out.
WRK_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local file = io.open("BODY_FILE", "rb")
wrk.body = file:read("*a")
file:close()
done = function(summary, latency, requests)
  io.write(string.format("p50_us %d\\np99_us %d\\n", latency:percentile(50), latency:percentile(99)))
end
"""


def _number(pattern: str, output: str) -> int:
    found = re.search(pattern, output)
    if found is None:
        raise RuntimeError(f"no {pattern!r} in the load generator's output:\n{output}")
    return int(found[1])


def _run(command: list[str]) -> tuple[str, float]:
    """The command's output, and the CPU seconds it used (its children's rusage)."""
    before = os.times()
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return result.stdout + result.stderr, cpu


def _figures(rate: float, p50_ms: float, p99_ms: float, errors: int, cpu_share: float) -> dict[str, float]:
    return {
        "requests_per_s": round(rate, 1),
        "p50_ms": round(p50_ms, 2),
        "p99_ms": round(p99_ms, 2),
        "errors": errors,
        "load_generator_cpu": round(cpu_share, 2),
    }
