"""`python -m trainer`: train the MNIST CNN and export the next version (trainer/cli.py)."""

import sys

from trainer.cli import main

sys.exit(main())
