"""Docker's restart policies (`restart:` in docker-compose.yml) for `make up`'s processes.

A part that dies is started again as Docker would start its container: `always` and `unless-stopped`
after any exit, `on-failure[:N]` after a non-zero one (at most N times), `no` never; with a delay that
doubles after each attempt and starts small again once the part has run for a while. Unlike Docker,
which retries forever, a part that keeps dying within seconds of each start is given up, so that a
broken part ends `make up` with one line instead of a restart loop nobody reads.
"""

from __future__ import annotations

from dataclasses import dataclass

POLICIES = ("no", "always", "unless-stopped", "on-failure")
FIRST_DELAY_S = 0.5
QUICK_EXIT_S = 10.0  # an exit sooner than this after its start is "quick"; a longer run resets the delay
GIVE_UP_AFTER = 5  # quick exits in a row


@dataclass(frozen=True)
class Verdict:
    """What to do about one exit: start again after `delay_s`, or not (and `why`, when giving up)."""

    restart: bool
    delay_s: float = 0.0
    why: str = ""


@dataclass
class RestartPolicy:
    name: str = "no"
    max_retries: int | None = None  # on-failure:N
    restarts: int = 0
    quick_exits: int = 0

    @classmethod
    def parse(cls, text: str) -> RestartPolicy:
        """`no`, `always`, `unless-stopped`, `on-failure` or `on-failure:N`, as Compose spells them."""
        name, sep, count = str(text).partition(":")
        if name not in POLICIES or (sep and (name != "on-failure" or not count.isdigit())):
            raise ValueError(f"restart: {text!r} is not one of no, always, unless-stopped, on-failure[:N]")
        return cls(name, int(count) if sep else None)

    def after_exit(self, returncode: int, ran_for_s: float) -> Verdict:
        if self.name == "no" or (self.name == "on-failure" and returncode == 0):
            return Verdict(restart=False)
        if self.max_retries is not None and self.restarts >= self.max_retries:
            return Verdict(restart=False, why=f"was restarted {self.restarts} times, its limit")
        self.quick_exits = self.quick_exits + 1 if ran_for_s < QUICK_EXIT_S else 0
        if self.quick_exits >= GIVE_UP_AFTER:
            why = f"died within {QUICK_EXIT_S:.0f} s of each of its last {self.quick_exits} starts"
            return Verdict(restart=False, why=why)
        self.restarts += 1
        return Verdict(restart=True, delay_s=FIRST_DELAY_S * 2 ** max(self.quick_exits - 1, 0))
