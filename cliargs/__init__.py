"""argparse for the platform's commands, with a usage error in one line.

argparse prints the whole usage block (a dozen lines for the server's flags) before the error itself;
the platform's commands say what is wrong and where to read more, in one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
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
