"""``python -m acn``: the same as the ``acn`` command."""

import sys

from acn.cli import main

sys.exit(main())
