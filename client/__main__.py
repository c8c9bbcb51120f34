"""`mnist` and `python -m client`: the command of client/cli.py, imported only once a Ctrl-C can end
it in one line (cliargs.end_quietly_on_ctrl_c): its imports (numpy, gRPC, Pillow) take a quarter of a
second, time enough to press Ctrl-C in."""

import sys

from cliargs import end_quietly_on_ctrl_c


def command() -> int:
    end_quietly_on_ctrl_c("interrupted")
    from client.cli import command as run

    return run()  # which takes Ctrl-C over first thing


if __name__ == "__main__":
    sys.exit(command())
