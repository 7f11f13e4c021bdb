"""Shared benchmark plumbing: machine description, result files, cached fixtures."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache"
RESULTS = ROOT / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=ROOT, check=False).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def write_result(name: str, payload: dict[str, Any], directory: Path = RESULTS) -> Path:
    """Write ``<directory>/<name>.json`` with the machine description added."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2, default=str) + "\n")
    return path


def free_ports(n: int = 1) -> list[int]:
    """``n`` distinct free loopback ports (held together while chosen)."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def start_server(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``cogflight -q serve ARGS`` in a subprocess, its log appended to ``log``.

    The log goes to a file: a pipe nobody reads would fill and block the server's logging.
    """
    import sys

    exe = Path(sys.executable).with_name("cogflight")
    with log.open("ab") as fh:
        return subprocess.Popen(
            [str(exe), "-q", "serve", *args], stdout=subprocess.DEVNULL, stderr=fh
        )


def wait_ready(location: str, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    """Wait until the server at ``location`` answers ``health`` (or fail if it exits)."""
    import time

    from pyarrow import flight

    client = flight.connect(location)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                list(client.do_action(flight.Action("health", b"")))
                return
            except flight.FlightError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"cogflight serve at {location} did not start") from None
                time.sleep(0.1)
    finally:
        client.close()
