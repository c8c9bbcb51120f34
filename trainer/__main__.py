"""`python -m trainer`: train the MNIST CNN and export the next version (trainer/cli.py), which is
imported only once a Ctrl-C can end it in one line (cliargs.end_quietly_on_ctrl_c)."""

import sys

from cliargs import end_quietly_on_ctrl_c

end_quietly_on_ctrl_c("interrupted: no version was exported")
from trainer.cli import main  # noqa: E402  (after the handler: its imports take a second)

sys.exit(main())
