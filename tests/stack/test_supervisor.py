"""`make up`'s supervisor on tiny real processes: output prefixed by part, exits reported, each part stopped
by its own signal and killed after the grace period (or at once on an impatient second Ctrl-C), stop
signals turned into events, and no part outliving a killed supervisor. Restart policies are in
test_restarts.py.

Children that must be inside a signal handler before they are signalled say so by creating a file in the
supervisor's directory (its cwd), and the test polls for it: no sleeps stand in for synchronisation.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack.supervisor import (
    IMPATIENT_AFTER_S,
    OUTPUT_BACKLOG,
    STOP_SIGNALS,
    Exited,
    Part,
    Signalled,
    Supervisor,
)
from tests.conftest import ROOT, wait_for

pytestmark = pytest.mark.fast

# A child that exits with 100 + the number of the stop signal it gets (SIGINT 102, SIGTERM 115), once it
# has created the file named by its first argument.
REPORTS_ITS_SIGNAL = """
import os, pathlib, signal, sys
for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, lambda signum, _frame: os._exit(100 + signum))
pathlib.Path(sys.argv[1]).touch()
while True:
    signal.pause()
"""
# A child that shrugs off SIGTERM, the stop signal a part gets by default.
IGNORES_SIGTERM = """
import pathlib, signal, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path(sys.argv[1]).touch()
while True:
    signal.pause()
"""


def python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def alive(pid: int) -> bool:
    """Whether `pid` still runs. A zombie counts as gone: a part orphaned by the test's supervisor is
    reaped by whatever adopts it, which in a container may be never."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def exited(supervisor: Supervisor, timeout_s: float = 10) -> Exited:
    event = supervisor.next_event(timeout_s)
    assert isinstance(event, Exited), event
    return event


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    """A supervisor working in tmp_path; whatever a test leaves running is killed afterwards."""
    running = Supervisor(str(tmp_path))
    yield running
    running.stop_all([], since=time.monotonic(), grace_s=0)
    running.flush()


@contextlib.contextmanager
def forwarding(supervisor: Supervisor) -> Iterator[None]:
    """forward_signals for the length of a test: pytest's own SIGINT handler comes back afterwards."""
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    try:
        supervisor.forward_signals()
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_output_lines_are_prefixed_by_the_parts_name(
    supervisor: Supervisor, capsys: pytest.CaptureFixture[str]
) -> None:
    """stderr is merged, blank lines dropped, trailing blanks trimmed, and a part's own `name: ` prefix
    (the trainer's logging has one) not doubled."""
    code = (
        "import sys; print('hello'); print(); print('echoer: named already'); print('  indented  ');"
        "print('on stderr', file=sys.stderr)"
    )
    supervisor.start(Part("echoer", python(code)))
    assert exited(supervisor).returncode == 0
    supervisor.flush()
    assert capsys.readouterr().out.splitlines() == [
        "echoer   | hello",
        "echoer   | named already",
        "echoer   |   indented",
        "echoer   | on stderr",
    ]


def test_lines_are_shown_while_the_part_runs_not_at_its_exit(
    supervisor: Supervisor, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server logs and keeps running: its lines must come through unbuffered (PYTHONUNBUFFERED)."""
    supervisor.start(Part("server", python("import signal; print('listening'); signal.pause()")))
    seen: list[str] = []

    def shown() -> bool:
        seen.extend(capsys.readouterr().out.splitlines())
        return "server   | listening" in seen

    wait_for(shown, 10, "the running part's first line")
    assert supervisor.running["server"].poll() is None


def test_an_exit_is_reported_with_its_code_and_last_lines_even_when_not_echoed(
    supervisor: Supervisor, capsys: pytest.CaptureFixture[str]
) -> None:
    """A quiet part (the dashboard) shows nothing as it runs, so its last 20 lines are what explains a
    failure."""
    part = Part("quiet", python("for i in range(30): print(f'line {i}')\nraise SystemExit(3)"), echo=False)
    supervisor.start(part)
    event = exited(supervisor)
    assert event.part is part
    assert (event.returncode, event.how) == (3, "exit 3")
    assert event.last_lines == [f"line {i}" for i in range(10, 30)]
    assert event.ran_for_s > 0
    supervisor.flush()
    assert capsys.readouterr().out == ""


def test_a_part_killed_by_a_signal_is_reported_by_the_signals_name(supervisor: Supervisor) -> None:
    supervisor.start(Part("victim", python("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")))
    event = exited(supervisor)
    assert (event.returncode, event.how) == (-signal.SIGKILL, "killed by SIGKILL")


def test_a_part_runs_in_the_supervisors_directory_with_its_own_environment(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    code = (
        "import os; print(os.getcwd()); print(os.environ['GREETING']); print(os.environ['PYTHONUNBUFFERED'])"
    )
    supervisor.start(Part("env", python(code), env={"GREETING": "hi"}, echo=False))
    assert exited(supervisor).last_lines == [str(tmp_path), "hi", "1"]


def test_output_that_is_not_utf8_is_replaced_not_fatal(supervisor: Supervisor) -> None:
    """One bad byte from a part must not kill the thread that drains its pipe (the part would then block
    on a full pipe and its exit never be reported)."""
    code = "import sys; sys.stdout.buffer.write(b'caf\\xe9\\n'); print('after')"
    supervisor.start(Part("latin1", python(code), echo=False))
    event = exited(supervisor)
    assert (event.returncode, event.last_lines) == (0, ["caf\ufffd", "after"])


def test_stop_all_sends_each_part_its_own_stop_signal_and_returns_once_they_are_gone(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    """The trainer stops cleanly on SIGINT, the others on SIGTERM; with every part gone the grace period
    is not waited out."""
    parts = [
        Part("trainer", python(REPORTS_ITS_SIGNAL, "trainer-ready"), stop_signal=signal.SIGINT),
        Part("serving", python(REPORTS_ITS_SIGNAL, "serving-ready")),
    ]
    for part in parts:
        supervisor.start(part)
    wait_for(lambda: all((tmp_path / f"{p.name}-ready").exists() for p in parts), 10, "both handlers")
    started = time.monotonic()
    supervisor.stop_all(parts, since=started, grace_s=20)
    assert time.monotonic() - started < 5
    assert supervisor.running["trainer"].returncode == 100 + signal.SIGINT
    assert supervisor.running["serving"].returncode == 100 + signal.SIGTERM


def test_a_part_that_ignores_its_stop_signal_is_killed_after_the_grace_period(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    part = Part("stubborn", python(IGNORES_SIGTERM, "ready"))
    supervisor.start(part)
    wait_for((tmp_path / "ready").exists, 10, "SIGTERM to be ignored")
    started = time.monotonic()
    supervisor.stop_all([part], since=started, grace_s=0.5)
    assert 0.5 <= time.monotonic() - started < 5
    assert supervisor.running["stubborn"].returncode == -signal.SIGKILL


def test_a_parts_own_children_are_killed_with_it_even_after_it_is_gone(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    """The part dies on SIGTERM at once, but a child of its (a worker that ignores SIGTERM) is still in
    its process group, and the final SIGKILL goes to the whole group."""
    worker = IGNORES_SIGTERM.replace(
        "pathlib.Path(sys.argv[1]).touch()",
        "import os; pathlib.Path(sys.argv[1]).write_text(str(os.getpid()))",
    )
    leader = (
        f"import signal, subprocess, sys; subprocess.Popen([sys.executable, '-c', {worker!r}, 'worker.tmp']);"
        "signal.pause()"
    )
    part = Part("leader", python(leader))
    supervisor.start(part)
    pid_file = tmp_path / "worker.tmp"
    wait_for(lambda: pid_file.exists() and pid_file.read_text() != "", 10, "the worker's pid")
    worker_pid = int(pid_file.read_text())
    try:
        assert alive(worker_pid)
        supervisor.stop_all([part], since=time.monotonic(), grace_s=20)
        assert supervisor.running["leader"].returncode == -signal.SIGTERM
        wait_for(lambda: not alive(worker_pid), 5, "the worker to be killed with its group")
    finally:
        if alive(worker_pid):
            os.kill(worker_pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("later_s", "kills_at_once"),
    [(IMPATIENT_AFTER_S / 2, False), (IMPATIENT_AFTER_S, True), (3 * IMPATIENT_AFTER_S, True)],
)
def test_a_second_stop_signal_kills_at_once_only_if_it_comes_a_second_or_more_later(
    supervisor: Supervisor, tmp_path: Path, later_s: float, kills_at_once: bool
) -> None:
    """The same request often arrives twice within moments (make and the process group both signal);
    only a later one is a user's second Ctrl-C. `since` is a whole number so that `since + 1.0` minus
    `since` is exactly the boundary."""
    part = Part("stubborn", python(IGNORES_SIGTERM, "ready"))
    supervisor.start(part)
    wait_for((tmp_path / "ready").exists, 10, "SIGTERM to be ignored")
    since = float(round(time.monotonic()))
    supervisor.events.put(Signalled(signal.SIGINT, at=since + later_s))
    grace_s = 30.0 if kills_at_once else 0.8
    started = time.monotonic()
    supervisor.stop_all([part], since=since, grace_s=grace_s)
    took = time.monotonic() - started
    assert took < 5 if kills_at_once else took >= grace_s
    assert supervisor.running["stubborn"].returncode == -signal.SIGKILL


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_forwarded_stop_signals_become_events(supervisor: Supervisor, signum: int) -> None:
    """Ctrl-C, kill and a closed terminal reach the main loop as an event, not a KeyboardInterrupt."""
    with forwarding(supervisor):
        before = time.monotonic()
        os.kill(os.getpid(), signum)
        event = supervisor.next_event(5)
    assert isinstance(event, Signalled)
    assert event.signum == signum and before <= event.at <= time.monotonic()


def test_a_real_second_ctrl_c_during_the_stop_kills_at_once(supervisor: Supervisor, tmp_path: Path) -> None:
    """End to end through the handlers: the part answers its SIGTERM by sending this process a SIGINT,
    which arrives while stop_all waits, well over a second after the first stop request."""
    code = """
import os, pathlib, signal
signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getppid(), signal.SIGINT))
pathlib.Path('ready').touch()
while True:
    signal.pause()
"""
    part = Part("stubborn", python(code))
    with forwarding(supervisor):
        supervisor.start(part)
        wait_for((tmp_path / "ready").exists, 10, "the part's SIGTERM handler")
        started = time.monotonic()
        supervisor.stop_all([part], since=started - 2 * IMPATIENT_AFTER_S, grace_s=30)
    assert time.monotonic() - started < 5
    assert supervisor.running["stubborn"].returncode == -signal.SIGKILL


def test_next_event_gives_up_after_its_timeout(supervisor: Supervisor) -> None:
    """How the main loop wakes up for a due restart when nothing happens."""
    started = time.monotonic()
    assert supervisor.next_event(0.3) is None
    assert time.monotonic() - started >= 0.3


def test_next_event_with_no_time_left_still_returns_a_queued_event(supervisor: Supervisor) -> None:
    supervisor.events.put(Signalled(signal.SIGINT))
    assert isinstance(supervisor.next_event(0), Signalled)


def test_a_terminal_that_stops_reading_loses_lines_not_the_stack(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the terminal stalled (Ctrl-S, an unread pipe) say() must not block and a part's pipe must
    still be drained, or a part blocks on a full pipe and its exit is never seen."""

    class StalledTerminal(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.resume = threading.Event()

        def write(self, text: str) -> int:
            self.resume.wait()
            return super().write(text)

    terminal = StalledTerminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    try:

        def say_more_than_the_backlog() -> None:
            for i in range(OUTPUT_BACKLOG + 500):
                supervisor.say("stack", str(i))

        saying = threading.Thread(target=say_more_than_the_backlog, daemon=True)
        saying.start()
        saying.join(5)
        assert not saying.is_alive(), "say() blocked on a stalled terminal"
        supervisor.start(Part("chatty", python("for i in range(5000): print('x' * 80)")))
        assert exited(supervisor).returncode == 0
    finally:
        terminal.resume.set()
    supervisor.flush(timeout_s=10)
    shown = terminal.getvalue().splitlines()
    assert shown[0] == "stack    | 0"
    assert OUTPUT_BACKLOG <= len(shown) <= OUTPUT_BACKLOG + 1  # the queue, and the line being written


def test_a_killed_supervisors_parts_die_with_it(tmp_path: Path) -> None:
    """SIGKILL gives the supervisor no chance to stop anything; the kernel's parent-death signal
    (PR_SET_PDEATHSIG) must then end its parts, which are in sessions of their own."""
    pid_file = tmp_path / "part.pid"
    script = f"""
import pathlib, signal, sys
from stack.supervisor import Part, Supervisor
supervisor = Supervisor('.')
supervisor.start(Part('sleeper', [sys.executable, '-c', 'import time; time.sleep(60)']))
pathlib.Path('part.tmp').write_text(str(supervisor.running['sleeper'].pid))
pathlib.Path('part.tmp').rename({str(pid_file)!r})
signal.pause()
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    outer = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=env)
    part_pid = None
    try:
        wait_for(
            lambda: pid_file.exists() or outer.poll() is not None, 10, "the supervisor to start its part"
        )
        assert outer.poll() is None, f"the supervisor exited with {outer.returncode}"
        part_pid = int(pid_file.read_text())
        assert alive(part_pid)
        outer.kill()
        outer.wait(5)
        wait_for(lambda: not alive(part_pid), 5, "the part to die with its supervisor")
    finally:
        if outer.poll() is None:
            outer.kill()
            outer.wait(5)
        if part_pid is not None and alive(part_pid):
            os.kill(part_pid, signal.SIGKILL)
