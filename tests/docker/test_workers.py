"""`docker compose -f docker-compose.yml -f deploy/compose/two-workers.yml up`: the trainer as two
tf.distribute workers in two containers, one version exported into the shared volume."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.docker.conftest import ComposeProject
from tests.docker.engine import Engine

TWO_WORKERS = ROOT / "deploy" / "compose" / "two-workers.yml"
QUICK_WORKERS = Path(__file__).parent / "quick-workers.yml"


@pytest.fixture(scope="module")
def workers(engine: Engine) -> Iterator[ComposeProject]:
    project = ComposeProject(engine, overrides=(TWO_WORKERS, QUICK_WORKERS))
    project.run("--profile", "embedded", "down", "--volumes", "--remove-orphans")
    yield project
    project.run("--profile", "embedded", "down", "--volumes", "--remove-orphans")


def test_two_worker_containers_train_one_version_together(workers: ComposeProject) -> None:
    result = workers.run("up", "--build", "trainer", "trainer-1")
    assert result.returncode == 0, result.stderr[-3000:]
    exits = {e["Service"]: e["ExitCode"] for e in workers.entries() if e["Service"].startswith("trainer")}
    assert exits == {"trainer": 0, "trainer-1": 0}, result.stdout[-3000:]
    assert "exported mnist version 1" in result.stdout
    assert "worker 0 exported the version" in result.stdout
    card = workers.run(
        "run",
        "--rm",
        "--no-deps",
        "--entrypoint",
        "cat",
        "trainer",
        "/models/mnist/1/assets.extra/model_card.json",
    )
    assert card.returncode == 0, card.stderr
    assert json.loads(card.stdout)["workers"] == 2
