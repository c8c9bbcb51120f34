"""Benchmark: serving replicas behind the balancer against one server alone, under Docker.

    make bench-replicas     (or: .venv/bin/python bench/replicas.py [--seconds 10])

`docker compose --profile embedded up` as the Docker tests run it (the quick trainer's model), first
with one replica, whose own ports a small override publishes too, so the same server is loaded alone
and through HAProxy; then with `SERVING_REPLICAS=3`, through HAProxy. Single-image requests, 32 in
flight, from h2load (gRPC) and wrk (REST) on the host. The engine and the base images come as in the
Docker tests (tests/docker: the machine's engine, or Debian's started for the run). Writes
bench/results/replicas.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import ensure_tools, h2load_grpc, wrk_rest  # noqa: E402
from bench.machine import describe_machine  # noqa: E402
from bench.serve import payloads_for  # noqa: E402
from contract.signature import scale_pixels  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.docker.conftest import ComposeProject, balancer_image  # noqa: E402
from tests.docker.engine import Engine, base_images, ensure_image, start_engine  # noqa: E402
from trainer.data import load_pair  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "replicas.json"
IN_FLIGHT = 32
SERVER = "serving-embedded"


def load(grpc_target: str, rest_url: str, payloads: dict[str, bytes], seconds: float) -> dict[str, Any]:
    return {
        "grpc": h2load_grpc(grpc_target, payloads["grpc"], IN_FLIGHT, seconds),
        "rest": wrk_rest(f"{rest_url}/v1/models/mnist:predict", payloads["rest"], IN_FLIGHT, seconds),
    }


def run_stack(
    engine: Engine, replicas: int, payloads: dict[str, bytes], seconds: float, scratch: Path
) -> dict[str, Any]:
    """Bring the stack up with `replicas` servers, load it, take it down; with one replica, load the
    server directly as well (its ports published by an override)."""
    direct = {"GRPC": free_port(), "REST": free_port()}
    overrides: tuple[Path, ...] = ()
    if replicas == 1:
        publish = scratch / "publish-replica.yml"
        publish.write_text(
            json.dumps(
                {
                    "services": {
                        SERVER: {
                            "ports": [f"127.0.0.1:{direct['GRPC']}:8500", f"127.0.0.1:{direct['REST']}:8501"]
                        }
                    }
                }
            )
        )
        overrides = (publish,)
    project = ComposeProject(engine, replicas=replicas, overrides=overrides)
    project.run("--profile", "embedded", "down", "--volumes", "--remove-orphans")
    try:
        up = project.run("--profile", "embedded", "up", "--build", "--wait")
        if up.returncode != 0:
            raise SystemExit(f"docker compose up failed: {up.stderr[-2000:]}")
        cells = {
            f"balancer_{replicas}_replicas": load(
                project.grpc_target, project.url("REST_PORT"), payloads, seconds
            )
        }
        if replicas == 1:
            cells["server_alone"] = load(
                f"127.0.0.1:{direct['GRPC']}", f"http://127.0.0.1:{direct['REST']}", payloads, seconds
            )
        return cells
    finally:
        project.run("--profile", "embedded", "down", "--volumes", "--remove-orphans")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per cell (default 10)")
    args = parser.parse_args()
    ensure_tools()
    image = scale_pixels(load_pair(ROOT / "data" / "mnist", "t10k", verify=False).images[:1])
    payloads = payloads_for(image)
    engine = start_engine()
    results: dict[str, Any] = {}
    try:
        for base in [*base_images(ROOT / "Dockerfile"), balancer_image()]:
            ensure_image(engine, base)
        with tempfile.TemporaryDirectory() as scratch:
            for replicas in (1, 3):
                for cell, figures in run_stack(
                    engine, replicas, payloads, args.seconds, Path(scratch)
                ).items():
                    results[cell] = figures
                    print(f"{cell}: {json.dumps(figures)}", file=sys.stderr, flush=True)
    finally:
        engine.stop()
    results["setup"] = {
        "machine": describe_machine(),
        "model": "seed, the Docker tests' quick trainer (tests/docker/quick-trainer.yml)",
        "server": "the embedded server with docker-compose.yml's flags (TFLite, batching), in containers",
        "load": f"{IN_FLIGHT} single-image requests in flight, {args.seconds:g} s a cell, "
        "h2load and wrk on the host",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
