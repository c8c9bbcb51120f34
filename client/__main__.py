"""`mnist` and `python -m client`: the command of client/cli.py, imported only once a Ctrl-C can end
it in one line. Its imports (numpy, gRPC, Pillow) take a quarter of a second, time enough to press
Ctrl-C in, which then printed Python's traceback from the middle of an import (or numpy's own page
of advice, as it takes any error in its import for a broken install)."""

import os
import signal
import sys
from types import FrameType


def _interrupted(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C while the command is still importing: nothing to clean up yet, so it ends here, with no
    exception for an import to wrap."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second press while this one is told
    print("interrupted", file=sys.stderr, flush=True)
    os._exit(130)


def command() -> int:
    signal.signal(signal.SIGINT, _interrupted)
    from client.cli import command as run

    return run()  # which takes Ctrl-C over first thing


if __name__ == "__main__":
    sys.exit(command())
