"""`make up` as a new user runs it: a fresh model directory, a quick first model trained in the
background, predictions over gRPC and REST, the dashboard in Chromium, Ctrl-C, and nothing left behind.
A second `make up` reuses the model and stops on SIGTERM."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import requests
from playwright.sync_api import Browser

from client import ServingClient, ServingClientError
from contract.model_dir import versions
from contract.signature import scale_pixels
from stack.compose import server_flags
from tests.client.conftest import encode, photo_of
from tests.conftest import QUICK_TRAIN_ARGS, ROOT, free_port, model_states, wait_for
from tests.e2e.conftest import dashboard_healthy, needs_chromium, open_page, screenshot
from trainer.data import Split

pytestmark = needs_chromium


@dataclass
class MakeUp:
    """`make up` in a session of its own, as a terminal would run it; its output collected."""

    model_dir: Path
    ports: dict[str, int]
    process: subprocess.Popen[str] = field(init=False)  # set by start()
    output: list[str] = field(default_factory=list)
    reader: threading.Thread = field(init=False)

    def start(self, train_args: tuple[str, ...] = QUICK_TRAIN_ARGS) -> None:
        env = {
            **os.environ,
            "MODEL_DIR": str(self.model_dir),
            "TRAIN_ARGS": " ".join(train_args),
            "GRPC_PORT": str(self.ports["port"]),
            "REST_PORT": str(self.ports["rest_api_port"]),
            "DASHBOARD_PORT": str(self.ports["dashboard"]),
        }
        env.pop("RETRAIN", None)
        self.output.clear()
        self.process = subprocess.Popen(
            ["make", "--no-print-directory", "up"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        lines = self.process.stdout or ()
        self.reader = threading.Thread(target=lambda: self.output.extend(lines), daemon=True)
        self.reader.start()

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.ports['rest_api_port']}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboard']}"

    def says(self, text: str) -> bool:
        return any(text in line for line in self.output)

    def available(self) -> bool:
        return "AVAILABLE" in model_states(self.rest).values()

    def stop(self, signum: int, whole_group: bool) -> None:
        """Ctrl-C at a terminal signals the whole foreground group; `kill` signals make alone."""
        if whole_group:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)
        self.process.wait(60)
        self.reader.join(10)  # every line read


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (parents read from /proc), however deep and whatever its session."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().split("\0")[:-1]
    except FileNotFoundError:  # it ended meanwhile
        return []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def listening_addresses(pids: list[int]) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses the processes' TCP sockets listen on, from the kernel's socket tables."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            inodes |= {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
    addresses = set()
    for table, size in (("tcp", 4), ("tcp6", 16)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and f"socket:[{fields[9]}]" in inodes:  # 0A: LISTEN
                raw = bytes.fromhex(fields[1].split(":")[0])  # 32-bit words in host (little-endian) order
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, size, 4))
                address = ipaddress.ip_address(words)
                addresses.add(getattr(address, "ipv4_mapped", None) or address)  # gRPC's ::ffff:127.0.0.1
    return addresses


def serving_pids(make_up: MakeUp) -> list[int]:
    return [p for p in descendants(make_up.process.pid) if cmdline(p)[1:3] == ["-m", "serving"]]


def predicts(make_up: MakeUp) -> bool:
    client = ServingClient.grpc(f"127.0.0.1:{make_up.ports['port']}", retries=0, timeout=2)
    try:
        return client.predict(np.zeros((1, 28, 28, 1), np.float32))[0].version == 1
    except ServingClientError:
        return False


def with_model(make_up: MakeUp, trained_model_dir: Path) -> None:
    """A model directory that already holds version 1 (the quick model the test run trained)."""
    (make_up.model_dir / "mnist").mkdir(parents=True)
    (make_up.model_dir / "mnist" / "1").symlink_to(trained_model_dir / "mnist" / "1")


@pytest.fixture
def make_up(tmp_path: Path) -> Iterator[MakeUp]:
    ports = {"port": free_port(), "rest_api_port": free_port(), "dashboard": free_port()}
    up = MakeUp(tmp_path / "models", ports)
    yield up
    if hasattr(up, "process") and up.process.poll() is None:
        up.stop(signal.SIGKILL, whole_group=True)


def test_make_up_from_nothing_to_predictions_and_a_clean_stop(
    make_up: MakeUp, browser: Browser, mnist_test: Split
) -> None:
    make_up.start()
    wait_for(make_up.available, 240, "a first model to be trained and served")
    wait_for(lambda: make_up.says("dashboard  http://localhost"), 60, "the addresses to be printed")
    assert requests.get(f"{make_up.dashboard}/_stcore/health", timeout=5).text == "ok"

    parts = descendants(make_up.process.pid)
    servers = [cmdline(p)[3:] for p in parts if cmdline(p)[1:3] == ["-m", "serving"]]
    ports = {k: v for k, v in make_up.ports.items() if k != "dashboard"}
    assert servers == [server_flags(ROOT / "docker-compose.yml", make_up.model_dir, ports)]
    # Nothing listens beyond this machine unless HOST says so.
    addresses = listening_addresses(parts)
    assert addresses and all(address.is_loopback for address in addresses), addresses

    images = scale_pixels(mnist_test.images[:20])
    over_grpc = ServingClient.grpc(f"127.0.0.1:{make_up.ports['port']}").predict(images)
    over_rest = ServingClient.rest(make_up.rest).predict(images)
    assert [p.digit for p in over_grpc] == [p.digit for p in over_rest]
    assert np.mean([p.digit for p in over_grpc] == mnist_test.labels[:20]) >= 0.7
    assert {p.version for p in over_grpc} == {1}

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    for view, heading in (("training", "Training"), ("models", "Models")):
        open_page(page, f"{make_up.dashboard}/{view}")
        page.get_by_role("heading", name=heading).first.wait_for(timeout=30_000)
        assert page.locator('[data-testid="stException"]').count() == 0
        screenshot(page, f"make-up-{view}")
    upload = make_up.model_dir.parent / "digit.png"
    upload.write_bytes(encode(photo_of(mnist_test.images[0]), "PNG"))
    open_page(page, make_up.dashboard)
    page.locator('input[type="file"]').set_input_files(str(upload))
    page.locator('[data-testid="stMetricValue"]').first.wait_for(timeout=60_000)
    screenshot(page, "make-up-predict")
    context.close()

    make_up.stop(signal.SIGINT, whole_group=True)
    assert make_up.says("stopped")
    assert not [p for p in parts if alive(p)]
    assert not [port for port in make_up.ports.values() if listening(port)]
    base = make_up.model_dir / "mnist"
    assert versions(base) == [1]
    assert sorted(p.name for p in base.iterdir()) == [
        ".runs",
        "1",
    ]  # no staging directory left


def test_a_second_make_up_reuses_the_model_and_stops_on_sigterm(
    make_up: MakeUp, trained_model_dir: Path
) -> None:
    with_model(make_up, trained_model_dir)
    make_up.start()
    wait_for(make_up.available, 120, "the existing version to be served")
    parts = descendants(make_up.process.pid)
    assert make_up.says("serving the newest version")
    assert not [p for p in parts if cmdline(p)[1:3] == ["-m", "trainer"]]
    make_up.stop(signal.SIGTERM, whole_group=False)
    assert not [p for p in parts if alive(p)]
    assert not [port for port in make_up.ports.values() if listening(port)]
    assert versions(make_up.model_dir / "mnist") == [1]


def test_a_killed_server_is_started_again_and_the_dashboard_stays_up(
    make_up: MakeUp, trained_model_dir: Path
) -> None:
    with_model(make_up, trained_model_dir)
    make_up.start()
    wait_for(lambda: predicts(make_up), 120, "predictions")
    health = f"{make_up.dashboard}/_stcore/health"
    wait_for(lambda: dashboard_healthy(make_up.dashboard), 60, "the dashboard")
    wait_for(lambda: make_up.says("version 1 is AVAILABLE"), 30, "the first announcement")
    (server,) = serving_pids(make_up)

    dashboard_down: list[str] = []
    stop = threading.Event()

    def watch_dashboard() -> None:
        while not stop.wait(0.2):
            try:
                requests.get(health, timeout=5).raise_for_status()
            except requests.RequestException as err:
                dashboard_down.append(str(err))

    watcher = threading.Thread(target=watch_dashboard)
    watcher.start()
    try:
        os.kill(server, signal.SIGKILL)
        wait_for(lambda: not predicts(make_up), 10, "the server to be gone")
        wait_for(lambda: predicts(make_up), 30, "predictions from the restarted server")
    finally:
        stop.set()
        watcher.join()
    assert dashboard_down == []
    assert make_up.says("serving stopped unexpectedly (killed by SIGKILL); starting it again")
    (restarted,) = serving_pids(make_up)
    assert restarted != server
    news = "version 1 is AVAILABLE"
    wait_for(
        lambda: sum(news in line for line in make_up.output) >= 2,
        10,
        f"{news!r} again in {make_up.output[-12:]}",
    )
    make_up.stop(signal.SIGINT, whole_group=True)
    assert make_up.says("stopped")


def test_ctrl_c_while_training_exports_nothing_and_leaves_nothing(make_up: MakeUp) -> None:
    make_up.start(train_args=("--arch", "seed", "--limit", "20000", "--epochs", "30", "--patience", "30"))
    wait_for(lambda: make_up.says("epoch 1/30"), 120, "the first epoch to end")
    parts = descendants(make_up.process.pid)
    assert [p for p in parts if cmdline(p)[1:3] == ["-m", "trainer"]]
    make_up.stop(signal.SIGINT, whole_group=True)
    assert make_up.says("interrupted: no version was exported") and make_up.says("stopped")
    assert not [p for p in parts if alive(p)]
    assert not [port for port in make_up.ports.values() if listening(port)]
    base = make_up.model_dir / "mnist"
    assert versions(base) == [] and sorted(p.name for p in base.iterdir()) == [".runs"]


def test_a_busy_port_is_one_line_and_nothing_starts(make_up: MakeUp) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", make_up.ports["dashboard"]))
        holder.listen()
        make_up.start()
        assert make_up.process.wait(60) != 0
    wait_for(lambda: make_up.says("is in use"), 10, "the error")
    errors = [line for line in make_up.output if line.startswith("error:")]
    assert len(errors) == 1 and str(make_up.ports["dashboard"]) in errors[0]
