"""``python -m stidi``: the command line (also what ``torchrun -m stidi train ...`` starts on every rank)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
