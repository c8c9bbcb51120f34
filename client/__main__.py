"""`python -m client`: the `mnist` command (client/cli.py)."""

import sys

from client.cli import command

sys.exit(command())
