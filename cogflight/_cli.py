"""The ``cogflight`` command line: parser, logging, and one-line errors.

Each command lives in its own module and registers itself with ``register(sub)``;
each imports the packages it needs only when it runs, so ``--help`` is fast.

Errors: every command's :class:`~cogflight_core.CogflightError` (and an
``OSError`` such as an unreadable file) is printed as ONE line on stderr,
``error: <what was wrong>; <what to do>``, with exit status 2; a
``BuildError`` adds its list of failures. Usage errors (a missing or unknown
flag) are one line too, with the same status. ``KeyboardInterrupt`` exits 130. A
traceback means a bug; ``-vv`` logs one for every error.

Logging goes to stderr. Commands that print their result (build, info, preview,
demo) log warnings only unless ``-v`` is given, so a failure prints nothing but
its error line; ``serve``, whose log is its output, logs INFO by default, as text or,
with ``log_format = json``, one JSON object per line (``cogflight_core._logging``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from cogflight_core import BuildError, CogflightError
from cogflight_core._logging import configure_logging

from . import _build_cmds, _demo, _preview_cmd, _serve_cmd
from ._version import __version__

__all__ = ["build_parser", "main"]

logger = logging.getLogger("cogflight.cli")

# Command modules in the order ``--help`` lists them.
_COMMANDS = (_build_cmds, _demo, _serve_cmd, _preview_cmd)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other error."""

    def error(self, message: str) -> NoReturn:
        """Print ``error: <message>; run '<command> --help' for usage`` and exit 2."""
        self.exit(2, f"error: {message}; run '{self.prog} --help' for usage\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (used by ``main``, the tests and the docs)."""
    parser = _Parser(
        prog="cogflight",
        description="Serve cloud-optimized GeoTIFFs to machine learning as Arrow Flight "
        "streams of tensors.",
    )
    parser.add_argument(
        "--version", action="version", version=f"cogflight {__version__}", help="print the version"
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-v INFO, -vv DEBUG)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _COMMANDS:
        module.register(sub)
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    if args.quiet:
        level = logging.WARNING
    elif args.verbose:
        level = logging.DEBUG if args.verbose > 1 else logging.INFO
    else:
        level = logging.getLevelName(getattr(args, "default_log", "WARNING"))
    configure_logging(level)  # text; `serve` switches to its log_format once it is read


def error_line(exc: BaseException) -> str:
    """What ``main`` prints for an error: one line (a BuildError adds its failures)."""
    if isinstance(exc, OSError) and not isinstance(exc, CogflightError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"error: {exc.strerror}{where}; check the path and its permissions"
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, BuildError):
        return f"error: {text}"  # the message, then one line per failure
    return f"error: {text.splitlines()[0]}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cogflight`` console script and ``python -m cogflight``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args)
    try:
        return int(args.func(args))
    except (CogflightError, OSError) as exc:
        logger.debug("%s failed", args.command, exc_info=True)
        print(error_line(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
