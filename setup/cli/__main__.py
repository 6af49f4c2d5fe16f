"""``python -m setup.cli``: the ``trailwatch`` command."""

import sys

from setup.cli import main

sys.exit(main())
