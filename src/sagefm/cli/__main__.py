"""``python -m sagefm.cli``: the same as the ``sagefm`` command."""

import sys

from sagefm.cli import main

sys.exit(main())
