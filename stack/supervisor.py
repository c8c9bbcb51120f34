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

from stack.restarts import RestartPolicy

PR_SET_PDEATHSIG = 1
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, kill or make, a closed terminal
# One stop request often arrives twice (make forwards SIGTERM to us, and `kill -- -PGID` or `timeout`
# signal the whole group); only a signal this much later means "kill now".
IMPATIENT_AFTER_S = 1.0
OUTPUT_BACKLOG = 10_000  # lines
# Looked up before any fork: the child between fork and exec may only call what is already there.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


@dataclass
class Part:
    """One process of the stack."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    echo: bool = True  # print its output as it comes (else only its last lines if it fails)
    essential: bool = True  # its exit (unless restarted) ends the stack; a job (the trainer) need not run
    stop_signal: int = signal.SIGTERM
    restart: RestartPolicy = field(default_factory=RestartPolicy)


@dataclass
class Exited:
    part: Part
    returncode: int
    last_lines: list[str]
    ran_for_s: float

    @property
    def how(self) -> str:
        """ "exit 3", or "killed by SIGKILL"."""
        if self.returncode < 0:
            return f"killed by {signal.Signals(-self.returncode).name}"
        return f"exit {self.returncode}"


@dataclass
class Signalled:
    signum: int
    at: float = field(default_factory=time.monotonic)


class Supervisor:
    def __init__(self, cwd: str) -> None:
        self.cwd = cwd
        # SimpleQueue: its put() may be called from a signal handler that interrupted a get().
        self.events: queue.SimpleQueue[Exited | Signalled] = queue.SimpleQueue()
        self.running: dict[str, subprocess.Popen[str]] = {}
        self.starts: collections.Counter[str] = collections.Counter()  # how often each part was started
        # Lines go out through one writer thread: should the terminal stop reading (Ctrl-S, an unread
        # pipe), the parts' logs are still drained and a Ctrl-C still stops everything.
        self._lines: queue.Queue[str | None] = queue.Queue(maxsize=OUTPUT_BACKLOG)
        self._writer = threading.Thread(target=self._write, daemon=True)
        self._writer.start()

    def forward_signals(self) -> None:
        """Stop signals become events, handled in the main loop like an exit."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, lambda signum, _frame: self.events.put(Signalled(signum)))

    def say(self, name: str, line: str) -> None:
        with contextlib.suppress(queue.Full):  # a terminal that stopped reading loses lines, not the stack
            self._lines.put_nowait(f"{name:<9}| {line}")

    def _write(self) -> None:
        while (line := self._lines.get()) is not None:
            with contextlib.suppress(BrokenPipeError):  # `make up | tee` and a Ctrl-C
                print(line, flush=True)

    def flush(self, timeout_s: float = 2.0) -> None:
        """Let the writer print what is queued (at most `timeout_s` if the terminal is not reading)."""
        with contextlib.suppress(queue.Full):
            self._lines.put(None, timeout=timeout_s)
        self._writer.join(timeout_s)

    def start(self, part: Part) -> None:
        parent = os.getpid()

        def die_with_parent() -> None:
            _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:  # the parent died before the request was in place
                os.kill(os.getpid(), signal.SIGTERM)

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
            preexec_fn=die_with_parent,
        )
        self.running[part.name] = process
        self.starts[part.name] += 1
        threading.Thread(target=self._follow, args=(part, process, time.monotonic()), daemon=True).start()

    def _follow(self, part: Part, process: subprocess.Popen[str], started: float) -> None:
        tail: collections.deque[str] = collections.deque(maxlen=20)
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip().removeprefix(f"{part.name}: ")
            if not line:
                continue
            tail.append(line)
            if part.echo:
                self.say(part.name, line)
        returncode = process.wait()
        self.events.put(Exited(part, returncode, list(tail), time.monotonic() - started))

    def next_event(self, timeout_s: float | None = None) -> Exited | Signalled | None:
        """The next exit or stop signal; None once `timeout_s` has passed without one (an event
        already queued is returned even when no time is left)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            # Short waits: a signal handler's put() is then seen at once.
            wait = 0.5 if deadline is None else min(0.5, max(deadline - time.monotonic(), 0.0))
            try:
                return self.events.get(timeout=wait)
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    return None

    def stop_all(self, parts: list[Part], since: float, grace_s: float = 20.0) -> None:
        """Ask every running part to stop, wait up to `grace_s`, then kill what is left. A stop signal
        that comes a second or more after the one at `since` (a second Ctrl-C) kills at once."""
        for part in parts:
            process = self.running.get(part.name)
            if process is not None and process.poll() is None:
                self._signal(process, part.stop_signal)
        deadline = time.monotonic() + grace_s
        while any(p.poll() is None for p in self.running.values()) and time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(event, Signalled) and event.at - since >= IMPATIENT_AFTER_S:
                break
        for process in self.running.values():
            self._signal(process, signal.SIGKILL)  # the whole group, even if its leader is gone
            process.wait()

    @staticmethod
    def _signal(process: subprocess.Popen[str], signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone already
            os.killpg(process.pid, signum)
