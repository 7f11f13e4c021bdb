"""The installed distribution's version, or the source tree's when it is not installed."""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("cogflight")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.1.0"
