"""``python -m preimage``: the ``preimage`` command (:mod:`preimage.cli`)."""
import sys

from preimage.cli import main

sys.exit(main())
