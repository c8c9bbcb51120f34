"""The hostile-client drill's target, as its attacks see it: the server under attack (its ports, its
memory, whether it still serves), and how an attack says the server answered wrongly. A module of its own
so that the drill and both kinds of attack (bench/attacks.py, bench/http2_attacks.py) share it.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client import ServingClient, ServingClientError

TIMEOUT_MS = 3000  # the server's --rest_api_timeout_in_ms in the drill: stalled clients time out within it
PREDICT = "/tensorflow.serving.PredictionService/Predict"


class AttackFailed(Exception):
    """The server answered an attack wrongly."""


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    grpc_port: int
    rest_port: int
    log: Path

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def memory_bytes(self) -> int:
        """Resident memory of the server and its children (the JSON parsing process)."""
        total = 0
        for pid in (self.process.pid, *_children(self.process.pid)):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            total += next(
                int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS")
            )
        return total

    def serves_mnist(self, image: np.ndarray) -> bool:
        try:
            ServingClient.rest(self.rest, retries=0, timeout=10).predict(image)
            ServingClient.grpc(f"127.0.0.1:{self.grpc_port}", retries=0, timeout=10).predict(image)
        except ServingClientError:
            return False
        return True


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise AttackFailed(what)
