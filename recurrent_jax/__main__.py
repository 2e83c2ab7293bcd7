"""``python -m recurrent_jax``: the ``recurrent-jax`` command line (trains
the default config when given no arguments)."""

import sys

from recurrent_jax.cli import main

if __name__ == "__main__":
    sys.exit(main())
