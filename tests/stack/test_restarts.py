"""Restart policies as Compose spells them, and `make up`'s supervisor applying them to real processes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from stack.__main__ import watch
from stack.compose import restart_policy
from stack.restarts import GIVE_UP_AFTER, QUICK_EXIT_S, RestartPolicy
from stack.supervisor import Part, Supervisor
from tests.conftest import ROOT


@pytest.mark.parametrize(
    ("policy", "returncode", "restarts"),
    [
        ("no", 1, False),
        ("always", 0, True),
        ("unless-stopped", -9, True),
        ("on-failure", 0, False),
        ("on-failure", 1, True),
    ],
)
def test_which_exits_are_restarted(policy: str, returncode: int, restarts: bool) -> None:
    assert RestartPolicy.parse(policy).after_exit(returncode, ran_for_s=60).restart is restarts


def test_the_delay_doubles_while_exits_are_quick_and_starts_again_after_a_long_run() -> None:
    policy = RestartPolicy.parse("unless-stopped")
    delays = [policy.after_exit(1, ran_for_s=1).delay_s for _ in range(GIVE_UP_AFTER - 1)]
    assert delays == sorted(delays) and delays[-1] > delays[0]
    assert policy.after_exit(1, ran_for_s=QUICK_EXIT_S + 1).delay_s == delays[0]


def test_a_part_dying_within_seconds_of_every_start_is_given_up() -> None:
    policy = RestartPolicy.parse("always")
    verdicts = [policy.after_exit(1, ran_for_s=0.1) for _ in range(GIVE_UP_AFTER)]
    assert all(v.restart for v in verdicts[:-1])
    assert not verdicts[-1].restart and f"{GIVE_UP_AFTER} starts" in verdicts[-1].why


def test_on_failure_stops_after_its_count() -> None:
    policy = RestartPolicy.parse("on-failure:2")
    assert [policy.after_exit(1, ran_for_s=60).restart for _ in range(3)] == [True, True, False]


@pytest.mark.parametrize("text", ["sometimes", "on-failure:x", "always:3"])
def test_a_policy_compose_does_not_know_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="restart"):
        RestartPolicy.parse(text)


def test_make_up_takes_each_services_policy_from_the_compose_file() -> None:
    compose_file = ROOT / "docker-compose.yml"
    assert restart_policy(compose_file, "serving").name == "unless-stopped"
    assert restart_policy(compose_file, "dashboard").name == "unless-stopped"
    assert restart_policy(compose_file, "trainer").name == "no"


def test_the_supervisor_restarts_a_dying_part_then_gives_up_and_ends_the_stack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    starts = tmp_path / "starts"
    dies = Part(
        "flaky",
        [sys.executable, "-c", f"open({str(starts)!r}, 'a').write('x'); raise SystemExit(3)"],
        restart=RestartPolicy.parse("unless-stopped"),
    )
    supervisor = Supervisor(str(tmp_path))
    supervisor.start(dies)
    code, _ = watch(supervisor, tmp_path)
    supervisor.flush()
    assert code == 1
    assert starts.read_text() == "x" * GIVE_UP_AFTER
    lines = capsys.readouterr().out.splitlines()
    assert sum("flaky stopped unexpectedly (exit 3); starting it again in" in line for line in lines) == 4
    assert f"died within {QUICK_EXIT_S:.0f} s of each of its last {GIVE_UP_AFTER} starts" in lines[-1]
    assert lines[-1].endswith("stopping the rest")
