"""The startup guard: a small process that ends a worker which cannot find the others.

While the workers find each other, TensorFlow blocks inside its C++ holding Python's lock, for as long
as a peer is missing: no thread, exception or signal handler of the trainer's can act then. So the
trainer starts this guard first and tells it when the workers have met (a line on its standard input,
or the end of it). If that has not happened within the timeout, the guard names the workers that do not
answer in one line, marks the run failed, and kills the trainer (exit status 137). A Ctrl-C meanwhile
(or SIGTERM to the process group, or the terminal closing), which the blocked trainer cannot act on,
is the guard's too: it says so, marks the run failed and kills the trainer.

    python -m trainer.guard '{"parent": PID, "timeout_s": 120, "workers": [...], "index": 0,
                              "progress": "models/mnist/.runs/<run>/progress.json" or null}'
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
from pathlib import Path
from types import FrameType

from trainer.cluster import Cluster, silent_peers
from trainer.progress import RunProgress


class Interrupted(Exception):
    """Ctrl-C, SIGTERM to the process group (`timeout`, `kill -- -PGID`) or a closed terminal: each
    reaches the guard and the trainer alike, and the blocked trainer cannot act on it."""


# What ends a run while its workers look for each other. Died of SIGTERM or SIGHUP, the guard left the
# trainer blocked for good: TensorFlow takes SIGTERM over meanwhile, and nothing was left to end it.
INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted


def main(argv: list[str]) -> int:
    watch = json.loads(argv[0])
    for signum in INTERRUPTS:
        signal.signal(signum, _interrupted)
    try:
        heard, _, _ = select.select([sys.stdin], [], [], watch["timeout_s"])
    except Interrupted:
        for signum in INTERRUPTS:
            signal.signal(signum, signal.SIG_IGN)
        heard, _, _ = select.select([sys.stdin], [], [], 0)
        if heard:  # the workers have just met: the trainer takes its Ctrl-C itself
            return 0
        return _end_the_trainer(watch, "interrupted", "interrupted: no version was exported", 130)
    if heard:  # the workers met, or the trainer ended: nothing to do
        return 0
    cluster = Cluster(tuple(watch["workers"]), watch["index"])
    who = ", ".join(silent_peers(cluster)) or "some worker"
    message = (
        f"{cluster.me}: the workers did not find each other within {watch['timeout_s']:g}s: {who} not "
        "answering; no version exported"
    )
    return _end_the_trainer(watch, message, f"error: {message}", 1)


def _end_the_trainer(watch: dict, reason: str, line: str, status: int) -> int:
    """Mark the run failed for `reason`, say `line`, and kill the blocked trainer."""
    if watch["progress"]:
        RunProgress.reopen(Path(watch["progress"])).failed(reason)
    print(line, file=sys.stderr, flush=True)
    os.kill(watch["parent"], signal.SIGKILL)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
