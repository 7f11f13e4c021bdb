"""Log lines of a server process: text for people, or one JSON object per line for machines.

Lives in the core (standard library only) because two places configure logging:
the ``cogflight`` command line for its own process, and every spawned worker of
``cogflight serve --workers N`` for its own, and both must write the same lines
(``log_format`` of the server settings). A JSON line holds ``time`` (RFC 3339,
UTC), ``level``, ``logger``, ``message``, ``worker``, ``request_id`` when the
call passed one (``extra={"request_id": ...}``), and ``error`` (the traceback)
when there is one.

Concurrency policy: formatters are stateless after construction; ``logging``
serialises writes per handler.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

__all__ = ["JsonFormatter", "configure_logging", "rfc3339"]

TEXT_FORMAT = "%(asctime)s %(levelname)s {worker}%(name)s: %(message)s"


def rfc3339(epoch: float) -> str:
    """``epoch`` seconds as ``2024-05-01T12:00:00.123Z`` (the time of logs and usage records)."""
    when = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record (no newline inside: tracebacks are escaped)."""

    def __init__(self, worker: int = 0) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        doc: dict[str, Any] = {
            "time": rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "worker": self.worker,
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            doc["request_id"] = str(request_id)
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def configure_logging(
    level: int | str | None = None, log_format: str = "text", *, worker: int | None = None
) -> None:
    """Log to stderr in ``log_format`` (``text`` or ``json``); ``level`` None keeps the level.

    Calling it again (the command line knows ``log_format`` only once the settings are
    read) changes the format of the handler it installed. A process whose root logger
    already has other handlers (a test runner, an application embedding the server) keeps
    them as they are, level included. ``worker`` (a spawned server worker) appears in
    every line; None for the main process (worker 0 in JSON, nothing in text).
    """
    if log_format == "json":
        formatter: logging.Formatter = JsonFormatter(worker or 0)
    else:
        prefix = f"worker{worker} " if worker is not None else ""
        formatter = logging.Formatter(TEXT_FORMAT.format(worker=prefix))
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "cogflight", False)]
    if not ours:
        if root.handlers:
            return  # someone else's logging (as logging.basicConfig leaves it)
        stderr = logging.StreamHandler(sys.stderr)
        stderr.cogflight = True  # type: ignore[attr-defined]
        root.addHandler(stderr)
        ours = [stderr]
    for handler in ours:
        handler.setFormatter(formatter)
    if level is not None:
        root.setLevel(level)
