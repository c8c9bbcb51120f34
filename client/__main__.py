"""`mnist` and `python -m client`: the command of client/cli.py, imported only once a Ctrl-C can end
it in one line. Its imports (numpy, gRPC, Pillow) take a quarter of a second, time enough to press
Ctrl-C in, which then printed Python's traceback from the middle of an import."""

import signal
import sys


def command() -> int:
    try:
        from client.cli import command as run

        return run()
    except KeyboardInterrupt:  # pressed before the command took Ctrl-C over (cli.main's own from then on)
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # another press ends it as the system ends it
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(command())
