"""argparse for the platform's commands, with a usage error in one line.

argparse prints the whole usage block (a dozen lines for the server's flags) before the error itself;
the platform's commands say what is wrong and where to read more, in one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from types import FrameType
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line; its subcommands' parsers are the same kind."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def boolean(text: str) -> bool:
    """A flag's true or false, as TensorFlow's flags spell them (and 1/0, yes/no)."""
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def end_quietly_on_ctrl_c(message: str) -> None:
    """Until the command's own handling takes Ctrl-C over: a press ends the process at once with
    `message` and exit status 130. Meant for a command's first moments, while it imports what it needs
    (a quarter of a second to seconds), when there is nothing to clean up yet; raising
    KeyboardInterrupt there printed Python's traceback from the middle of an import, or numpy's page
    of advice, as numpy takes any error in its import for a broken install."""

    def interrupted(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second press while this one is told
        print(message, file=sys.stderr, flush=True)
        os._exit(130)

    signal.signal(signal.SIGINT, interrupted)


def cannot_listen(host: str, port: int) -> OSError | None:
    """Why a command could not listen on `host:port` now (something listens there), or None: bound
    as servers bind (the address reusable), so a port left in TIME_WAIT is free. Checked before a
    command starts what would fail on it later, less clearly."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            return err
    return None
