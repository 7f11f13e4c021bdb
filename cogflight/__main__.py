"""``python -m cogflight``: the same command line as the ``cogflight`` script."""

import sys

from ._cli import main

__all__: list[str] = []

sys.exit(main())
