"""Child processes run as a group: output prefixed by part, exits reported, everything stopped together.

Each part runs in a session of its own, so a Ctrl-C at the terminal reaches only the supervisor, which
then stops the parts in order and waits for them; a part whose supervisor dies is sent SIGTERM by the
kernel (PR_SET_PDEATHSIG), so not even a killed supervisor leaves processes behind.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import queue
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

PR_SET_PDEATHSIG = 1


@dataclass
class Part:
    """One process of the stack."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    echo: bool = True  # print its output as it comes (else only its last lines if it fails)
    essential: bool = True  # its exit ends the stack; a job (the trainer) may end on its own
    stop_signal: int = signal.SIGTERM


@dataclass
class Exited:
    part: Part
    returncode: int
    last_lines: list[str]


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    def __init__(self, cwd: str) -> None:
        self.cwd = cwd
        self.events: queue.Queue[Exited | int] = queue.Queue()  # an exit, or a signal number
        self.running: dict[str, subprocess.Popen[str]] = {}
        self._print_lock = threading.Lock()

    def say(self, name: str, line: str) -> None:
        with self._print_lock, contextlib.suppress(BrokenPipeError):  # `make up | tee` and a Ctrl-C
            print(f"{name:<9}| {line}", flush=True)

    def start(self, part: Part) -> None:
        process = subprocess.Popen(
            part.argv,
            cwd=self.cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **part.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.running[part.name] = process
        threading.Thread(target=self._follow, args=(part, process), daemon=True).start()

    def _follow(self, part: Part, process: subprocess.Popen[str]) -> None:
        tail: collections.deque[str] = collections.deque(maxlen=20)
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip().removeprefix(f"{part.name}: ")
            if not line:
                continue
            tail.append(line)
            if part.echo:
                self.say(part.name, line)
        self.events.put(Exited(part, process.wait(), list(tail)))

    def forward_signals(self) -> None:
        """SIGINT and SIGTERM become events, handled in the main loop like an exit."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda signum, _frame: self.events.put(signum))

    def next_event(self) -> Exited | int:
        while True:
            try:
                return self.events.get(timeout=0.5)
            except queue.Empty:
                continue

    def stop_all(self, parts: list[Part], grace_s: float = 20.0) -> None:
        """Ask every running part to stop, wait up to `grace_s`, then kill what is left. A second
        Ctrl-C while waiting kills at once."""
        for part in parts:
            process = self.running.get(part.name)
            if process is not None and process.poll() is None:
                self._signal(process, part.stop_signal)
        deadline = time.monotonic() + grace_s
        while any(p.poll() is None for p in self.running.values()) and time.monotonic() < deadline:
            try:
                if isinstance(self.events.get(timeout=0.1), int):
                    break  # impatient: kill now
            except queue.Empty:
                pass
        for process in self.running.values():
            if process.poll() is None:
                self._signal(process, signal.SIGKILL)
                process.wait()

    @staticmethod
    def _signal(process: subprocess.Popen[str], signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            os.killpg(process.pid, signum)
