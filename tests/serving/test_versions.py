"""Version lifecycle under load: publish, fail, delete; and the server's own stop."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.conftest import ServerProcess, start_server, wait_for


def publish(model_dir: Path, source: Path, version: int) -> None:
    """Copy a version in the way the trainer writes one: beside, then renamed into place."""
    staging = model_dir / f".staging-{version}"
    shutil.copytree(source, staging)
    staging.rename(model_dir / str(version))


class Load:
    """Single-image REST predictions from a few threads until stopped; every answer recorded."""

    def __init__(self, server: ServerProcess, image: list, threads: int = 4) -> None:
        self.server, self.body = server, {"instances": [image]}
        self.versions: list[str] = []
        self.failures: list[str] = []
        self.refused = 0  # connections the server closed or refused (after it was stopped)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                try:
                    reply = session.post(
                        f"{self.server.rest_url}/v1/models/mnist:predict", json=self.body, timeout=30
                    )
                    status = session.get(f"{self.server.rest_url}/v1/models/mnist", timeout=30).json()
                except requests.ConnectionError:
                    self.refused += 1
                    return
                if reply.status_code != 200:
                    self.failures.append(reply.text)
                self.versions.append(
                    max(s["version"] for s in status["model_version_status"] if s["state"] == "AVAILABLE")
                )

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


@pytest.fixture
def model_dir(trained_model_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "mnist"
    target.mkdir()
    shutil.copytree(trained_model_dir / "mnist" / "1", target / "1")
    return target


def answering_version(server: ServerProcess, image: list) -> int:
    reply = requests.post(
        f"{server.rest_url}/v1/models/mnist:predict", json={"instances": [image]}, timeout=10
    )
    assert reply.status_code == 200, reply.text
    states = server.model_states()
    return max(v for v, s in states.items() if s == "AVAILABLE")


def test_new_broken_and_deleted_versions_under_load(model_dir: Path, images: np.ndarray) -> None:
    server = start_server(
        "--model_name=mnist", f"--model_base_path={model_dir}", "--file_system_poll_wait_seconds=0.2"
    )
    image = images[0].tolist()
    try:
        with Load(server, image) as load:
            wait_for(lambda: len(load.versions) > 10, 30, "traffic on version 1")
            publish(model_dir, model_dir / "1", 2)
            wait_for(
                lambda: server.model_states() == {2: "AVAILABLE", 1: "END"}, 30, "version 2 to replace 1"
            )
            served_after = len(load.versions)
            wait_for(lambda: len(load.versions) > served_after + 10, 30, "traffic on version 2")

            broken = model_dir / ".staging-3"
            broken.mkdir()
            (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
            broken.rename(model_dir / "3")
            wait_for(lambda: server.model_states().get(3) == "END", 30, "version 3 to fail")
            served_after = len(load.versions)
            wait_for(lambda: len(load.versions) > served_after + 10, 30, "traffic after the failed load")
        assert load.failures == [] and load.refused == 0
        assert "1" in load.versions and "2" in load.versions and "3" not in load.versions

        status = requests.get(f"{server.rest_url}/v1/models/mnist/versions/3", timeout=5).json()
        (failed,) = status["model_version_status"]
        assert failed["status"]["error_code"] != "OK" and "version 3" in failed["status"]["error_message"]
        assert (
            requests.post(
                f"{server.rest_url}/v1/models/mnist/versions/3:predict",
                json={"instances": [image]},
                timeout=5,
            ).status_code
            == 404
        )
        assert answering_version(server, image) == 2

        shutil.rmtree(model_dir / "2")
        wait_for(lambda: server.model_states().get(2) == "END", 30, "deleted version 2 to unload")
        assert (
            requests.post(
                f"{server.rest_url}/v1/models/mnist:predict", json={"instances": [image]}, timeout=5
            ).status_code
            == 404
        )
    finally:
        assert server.stop() == 0


def test_sigterm_finishes_cleanly_while_requests_run(model_dir: Path, images: np.ndarray) -> None:
    server = start_server("--model_name=mnist", f"--model_base_path={model_dir}")
    with Load(server, images[0].tolist(), threads=2) as load:
        wait_for(lambda: len(load.versions) > 5, 30, "traffic")
        assert server.stop(timeout=10) == 0
    _, stderr = server.process.communicate()
    assert "Traceback" not in stderr
    assert load.failures == []  # requests either got their answer or found the server gone
