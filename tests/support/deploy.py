"""Reading deploy/: the Dockerfile's instructions, the Kubernetes manifests, compose.yaml.

What the tests of tests/deploy take from the files themselves, so that a change there
that breaks the command, the probes or the sizing fails a test. No Docker engine and
no cluster: the parsing covers the forms these files use (JSON-form ENTRYPOINT, CMD and
HEALTHCHECK CMD, ``ENV K=V`` pairs, one ``${VAR:-default}`` form in compose).
"""

from __future__ import annotations

import json
import re
import shlex
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
# Per worker, beyond the cache: docs/operations.md (measured peak RSS over the cache in
# benchmarks/results/engine_throughput.json, 341 MiB, rounded up).
OVERHEAD_BYTES = 384 * 1024**2
# Batches in flight per stream: the engine's prefetch (2) and the one being sent.
BATCHES_PER_STREAM = 3
# What flight_server._serve waits for the gRPC shutdown after draining.
SHUTDOWN_S = 10


@dataclass
class Image:
    """What deploy/Dockerfile declares about the running container."""

    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    copies: list[tuple[str, str]] = field(default_factory=list)
    expose: list[int] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    user: str = ""
    base: str = ""


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def image(path: Path = DEPLOY / "Dockerfile") -> Image:
    """The Dockerfile's runtime facts (the last ENTRYPOINT/CMD/USER win, as in Docker)."""
    img = Image()
    for keyword, rest in dockerfile_instructions(path):
        if keyword == "FROM":
            img.base = rest.split()[0]
        elif keyword == "ENV":
            for pair in shlex.split(rest):
                name, sep, value = pair.partition("=")
                assert sep, f"ENV {pair!r}: use the NAME=VALUE form"
                img.env[name] = value
        elif keyword == "ENTRYPOINT":
            img.entrypoint = json.loads(rest)
        elif keyword == "CMD":
            img.cmd = json.loads(rest)
        elif keyword == "COPY":
            parts = [p for p in rest.split() if not p.startswith("--")]
            img.copies.extend((src, parts[-1]) for src in parts[:-1])
        elif keyword == "EXPOSE":
            img.expose.extend(int(p.split("/")[0]) for p in rest.split())
        elif keyword == "HEALTHCHECK":
            _, sep, command = rest.partition("CMD ")
            assert sep, "HEALTHCHECK: expected options, then CMD [...]"
            img.healthcheck = json.loads(command)
        elif keyword == "USER":
            img.user = rest
    return img


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty document of a YAML file."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes object under deploy/kubernetes (kustomizations excluded)."""
    out = []
    for path in sorted(KUBERNETES.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        out.extend((path, doc) for doc in yaml_documents(path))
    return out


def find(kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """The objects of a kind (and name)."""
    return [
        d for _, d in manifests() if d["kind"] == kind and name in (None, d["metadata"]["name"])
    ]


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    """The one object of a kind (and name)."""
    found = find(kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def workloads() -> list[dict[str, Any]]:
    """The Deployment and the StatefulSet."""
    return find("Deployment") + find("StatefulSet")


def container(workload: dict[str, Any]) -> dict[str, Any]:
    """The cogflight container of a workload."""
    (c,) = [
        c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == "cogflight"
    ]
    return c


def container_env(c: dict[str, Any]) -> dict[str, str]:
    """The container's plain variables (no valueFrom: the tests need their values)."""
    out = {}
    for var in c.get("env", []):
        assert "value" in var, f"{var['name']}: the tests read plain values only"
        out[var["name"]] = str(var["value"])
    return out


def configmap_file(name: str = "cogflight-config", key: str = "cogflight.toml") -> str:
    """One file of a ConfigMap."""
    return str(one("ConfigMap", name)["data"][key])


_UNITS = {
    "": 1,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}


def quantity(value: str | int) -> float:
    """A Kubernetes quantity: ``3200Mi`` in bytes, ``500m`` or ``2`` in cores."""
    text = str(value)
    if text.endswith("m"):
        return float(text[:-1]) / 1000
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text)
    assert match and match.group(2) in _UNITS, f"cannot read the quantity {value!r}"
    return float(match.group(1)) * _UNITS[match.group(2)]


_DEFAULTED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):-([^}]*)\}")


def compose() -> dict[str, Any]:
    """deploy/compose.yaml, ``${VAR:-default}`` read as its default (as compose does unset)."""
    text = (DEPLOY / "compose.yaml").read_text()
    assert "${" not in _DEFAULTED.sub("", text), "compose.yaml: give every variable a default"
    return yaml.safe_load(_DEFAULTED.sub(lambda m: m.group(2), text))


def free_port() -> int:
    """A free loopback TCP port (for a server started a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def remap(value: str, paths: dict[str, str]) -> str:
    """``value`` with each container path (the longest that matches) replaced by its host path.

    One pass: a host path put in is never replaced again (``/tmp`` inside ``/tmp/pytest-...``).
    """
    if not paths:
        return value
    pattern = "|".join(re.escape(p) for p in sorted(paths, key=len, reverse=True))
    return re.sub(f"(?:{pattern})(?![\\w.-])", lambda m: paths[m.group(0)], value)
