"""A Docker engine for the Docker tests, and stand-ins for official base images that cannot be pulled.

Where `docker info` answers, that engine is used as it is. Elsewhere (our CI machines) Debian's
`dockerd` is started as root with data and exec roots of its own, and stopped again after the run; its
data root is kept between runs, so images built once (stand-ins and the project's layers) are reused.

Docker Hub cannot be reached from our machines, so an official base image that cannot be pulled is
built here from Debian's packages and tagged with the official name, and the project's Dockerfile builds
unchanged. The stand-ins are test infrastructure: the product's files never mention them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
STANDINS = HERE / "standins"
CACHE = Path(os.environ.get("MNIST_DOCKER_CACHE", "/var/cache/mnist-platform-tests"))
RUN_DIR = Path("/run/mnist-platform-tests")
SOCKET = RUN_DIR / "docker.sock"
PIDFILE = RUN_DIR / "docker.pid"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEBIAN_ROOTFS = "mnist-platform-standin/debian:bookworm"
STANDIN_LABEL = "org.mnist-platform.standin"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


class EngineUnavailable(Exception):
    """No Docker engine can be had here: one line that says why."""


@dataclass
class Engine:
    """A Docker engine that answers at `docker_host`, and ours to stop if these tests started it."""

    docker_host: str
    daemon: subprocess.Popen[bytes] | None = None  # started by this run
    adopted_pid: int | None = None  # ours, left running by a run that was killed
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.env = {**os.environ, "DOCKER_HOST": self.docker_host}

    def attempt(self, *args: str, timeout: float = 600, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """`docker ARGS` against this engine, output captured."""
        return subprocess.run(
            ["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout, **kwargs
        )

    def docker(self, *args: str, **kwargs: Any) -> str:
        """`docker ARGS` that must succeed: its stdout (a failure raises, with docker's own words)."""
        result = self.attempt(*args, **kwargs)
        if result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def stop(self) -> None:
        """Stop the engine if these tests started it (its containers stop with it)."""
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(60)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        if self.adopted_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.adopted_pid, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while Path(f"/proc/{self.adopted_pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.2)


def _answers(docker_host: str | None) -> bool:
    env = {**os.environ, **({"DOCKER_HOST": docker_host} if docker_host else {})}
    try:
        return subprocess.run(["docker", "info"], env=env, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _install(*packages: str) -> None:
    """Debian's packages, with apt, as root (directly or through sudo)."""
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if sudo and not shutil.which("sudo"):
        raise EngineUnavailable(f"{', '.join(packages)} missing, and installing them needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        result = subprocess.run([*sudo, *command], env=env, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise EngineUnavailable(f"apt-get could not install {', '.join(packages)}: {last}")


def start_engine(deadline_s: float = 90) -> Engine:
    """The machine's own engine if one answers, else our own dockerd (installed first if missing)."""
    if _answers(None):
        return Engine(os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))
    ours = f"unix://{SOCKET}"
    if _answers(ours):  # left by a run that was killed: adopt it, and stop it at the end
        return Engine(ours, adopted_pid=int(PIDFILE.read_text()))
    if os.geteuid() != 0:
        raise EngineUnavailable("no Docker engine answers, and starting one needs root")
    commands = {"dockerd": "docker.io", "docker": "docker.io", "debootstrap": "debootstrap"}
    missing = sorted({package for command, package in commands.items() if not shutil.which(command)})
    if missing:
        _install(*missing)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    log = CACHE / "dockerd.log"
    daemon = subprocess.Popen(
        [
            "dockerd",
            f"--host={ours}",
            f"--data-root={CACHE / 'docker'}",
            f"--exec-root={RUN_DIR / 'exec'}",
            f"--pidfile={PIDFILE}",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a Ctrl-C of the tests is theirs to handle, not the engine's
    )
    engine = Engine(ours, daemon)
    deadline = time.monotonic() + deadline_s
    while not _answers(ours):
        if daemon.poll() is not None or time.monotonic() > deadline:
            engine.stop()
            last = (log.read_text(errors="replace").strip().splitlines() or ["no output"])[-1]
            raise EngineUnavailable(f"dockerd did not start (see {log}): {last}")
        time.sleep(0.5)
    return engine


def base_images(dockerfile: Path) -> list[str]:
    """The images a Dockerfile builds FROM, its own stages left out."""
    stages, bases = set(), []
    for line in dockerfile.read_text().splitlines():
        match = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line.strip(), re.IGNORECASE)
        if match:
            if match[1] not in stages and match[1] not in bases:
                bases.append(match[1])
            if match[2]:
                stages.add(match[2])
    return bases


def ensure_image(engine: Engine, image: str) -> str:
    """`image` present in the engine: pulled, or else a stand-in. Says which ("present", "pulled",
    "stand-in")."""
    found = engine.attempt("image", "inspect", "--format", "{{json .Config.Labels}}", image)
    if found.returncode == 0 and STANDIN_LABEL not in found.stdout:
        return "present"
    if engine.attempt("pull", "--quiet", image, timeout=300).returncode == 0:
        return "pulled"
    if found.returncode == 0:  # a stand-in built by an earlier run
        return "stand-in"
    build_standin(engine, image)
    return "stand-in"


def build_standin(engine: Engine, image: str) -> None:
    repository = image.split(":")[0].split("/")[-1]
    recipe = STANDINS / f"{repository}.Dockerfile"
    if not recipe.exists():
        raise EngineUnavailable(f"{image} cannot be pulled and there is no stand-in recipe {recipe.name}")
    if engine.attempt("image", "inspect", DEBIAN_ROOTFS).returncode != 0:
        import_debian_rootfs(engine)
    with tempfile.TemporaryDirectory() as context:
        shutil.copy(HOST_CA_BUNDLE, Path(context) / "ca-certificates.crt")  # pip through the proxy
        engine.docker(
            "build",
            "--quiet",
            "--file",
            str(recipe),
            "--build-arg",
            f"ROOTFS={DEBIAN_ROOTFS}",
            "--label",
            f"{STANDIN_LABEL}={image}",
            "--tag",
            image,
            context,
        )


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (the one our network lets through)."""
    sources = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]
    for source in sources:
        text = source.read_text(errors="replace") if source.is_file() else ""
        match = re.search(r"^(?:URIs:|deb)\s+(?:\[[^]]*\]\s+)?(\S+/debian)\s*$", text, re.MULTILINE)
        if match:
            return match[1]
    return DEFAULT_MIRROR


def import_debian_rootfs(engine: Engine) -> None:
    """A minimal Debian bookworm root file system, made by debootstrap and imported as an image."""
    if not shutil.which("debootstrap"):
        _install("debootstrap")
    with tempfile.TemporaryDirectory(dir=CACHE) as work:
        root = Path(work) / "root"
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(root), debian_mirror()],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if result.returncode != 0:
            last = (result.stdout + result.stderr).strip().splitlines()[-1:]
            raise EngineUnavailable(f"debootstrap failed: {' '.join(last)}")
        with subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE) as tar:
            engine.docker("import", "-", DEBIAN_ROOTFS, stdin=tar.stdout)
