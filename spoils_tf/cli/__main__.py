"""``python -m spoils_tf.cli <command> ...``: the ``spoils`` console script."""

import sys

from spoils_tf.cli import main

sys.exit(main())
