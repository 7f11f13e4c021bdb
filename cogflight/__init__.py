"""cogflight: the product command line and the demo, on top of every package.

``catalog`` (what exists), ``flight_server`` (pixels out) and ``flight_client``
(tensors in) never import this package; it composes them. The ``cogflight``
console script and ``python -m cogflight`` both run :func:`main`. Importing it
loads only the standard library; each command imports what it needs when it runs.
"""

from ._cli import main
from ._version import __version__

__all__ = ["__version__", "main"]
