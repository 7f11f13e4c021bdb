"""The image's command, run directly: there is no Docker engine here, so each test runs
what a container would run (ENTRYPOINT + CMD or the manifest's args, the ENV of the
Dockerfile, the workload's env and mounted files) as a process on loopback ports.

Read from the files themselves, so a Dockerfile, ConfigMap or compose.yaml change that
breaks the command fails here. Only what a container run changes is changed: the
listening addresses (loopback, free ports, as ``-e``/``-p`` would) and the paths of the
mounts (a temporary directory per volume).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyarrow import flight

from cogflight_core import ServerSettings
from tests.support.deploy import (
    DEPLOY,
    REPO,
    compose,
    container,
    container_env,
    free_port,
    image,
    one,
    remap,
)
from tests.support.flight_fixtures import make_root, query, tls_material

pytestmark = [pytest.mark.network, pytest.mark.timeout(240)]

SETTINGS = {f.name for f in dataclasses.fields(ServerSettings)}
needs_http = pytest.mark.skipif(
    "http_port" not in SETTINGS, reason="the http_port setting (probes, /metrics) is not here yet"
)
START_S = 60  # bound on a server becoming healthy (spawned interpreter, imports, a root listing)
TOKEN = "deploy-test-token-0123456789"


@dataclasses.dataclass
class Served:
    """A running ``cogflight serve`` process and how to reach it."""

    proc: subprocess.Popen[bytes]
    location: str
    env: dict[str, str]
    log: Path
    http_port: int | None
    options: flight.FlightCallOptions
    tls_root: bytes | None = None

    def client(self, location: str | None = None) -> flight.FlightClient:
        kw: dict[str, Any] = {"tls_root_certs": self.tls_root} if self.tls_root else {}
        return flight.connect(location or self.location, **kw)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _environment(*layers: dict[str, str]) -> dict[str, str]:
    """This process's environment without COGFLIGHT_* (conftest's), then the layers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COGFLIGHT_")}
    for layer in layers:
        env.update(layer)
    return env


def _argv(argv: list[str]) -> list[str]:
    """The container's command with its programs from this virtual environment."""
    programs = {
        "cogflight": str(Path(sys.executable).with_name("cogflight")),
        "python": sys.executable,
    }
    assert Path(programs["cogflight"]).exists()
    return [programs.get(argv[0], argv[0]), *argv[1:]]


def _action(served: Served, kind: str, client: flight.FlightClient | None = None) -> Any:
    c = client or served.client()
    try:
        (result,) = list(c.do_action(flight.Action(kind, b""), served.options))
        return json.loads(result.body.to_pybytes())
    finally:
        if client is None:
            c.close()


@contextmanager
def serving(
    argv: list[str],
    env: dict[str, str],
    location: str,
    workdir: Path,
    *,
    http_port: int | None = None,
    token: str | None = None,
    tls_root: bytes | None = None,
) -> Iterator[Served]:
    """Start the command, wait until its Flight ``health`` answers; SIGTERM it at the end."""
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    log = workdir / f"serve-{location.rsplit(':', 1)[1]}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _argv(argv), env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT
        )
    served = Served(
        proc,
        location,
        env,
        log,
        http_port,
        flight.FlightCallOptions(headers=headers, timeout=10),
        tls_root,
    )
    try:
        deadline = time.monotonic() + START_S
        while True:
            assert proc.poll() is None, f"exited with {proc.returncode}:\n{served.output()}"
            try:
                assert _action(served, "health")["status"] == "ok"
                break
            except (pa.ArrowException, OSError):
                assert time.monotonic() < deadline, f"not healthy:\n{served.output()}"
                time.sleep(0.2)
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _stop(served: Served) -> int:
    """SIGTERM, as `docker stop` and the kubelet send: the exit status once drained."""
    served.proc.send_signal(signal.SIGTERM)
    return served.proc.wait(timeout=60)


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _read_everything(served: Served, doc: dict[str, Any]) -> flight.FlightInfo:
    """Plan the query and read every endpoint over this one connection."""
    client = served.client()
    try:
        info = client.get_flight_info(
            flight.FlightDescriptor.for_command(json.dumps(doc)), served.options
        )
        rows = sum(
            client.do_get(ep.ticket, served.options).read_all().num_rows for ep in info.endpoints
        )
    finally:
        client.close()
    assert info.total_records > 0 and rows == info.total_records
    return info


def _wait_ready(served: Served) -> None:
    """Until ``/readyz`` answers 200 (once the root is listed), within START_S."""
    assert served.http_port is not None
    deadline = time.monotonic() + START_S
    while _get(served.http_port, "/readyz")[0] != 200:
        assert time.monotonic() < deadline, f"never ready:\n{served.output()}"
        time.sleep(0.2)


def _check_http(served: Served) -> None:
    """The probes answer, and the image's HEALTHCHECK command passes against them."""
    assert served.http_port is not None
    assert _get(served.http_port, "/healthz")[0] == 200
    _wait_ready(served)
    status, body = _get(served.http_port, "/metrics")
    assert status == 200 and b"cogflight_" in body
    check = subprocess.run(
        _argv(image().healthcheck), env=served.env, capture_output=True, timeout=30, check=False
    )
    assert check.returncode == 0, check.stderr.decode()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny root with its imagery inside it (the root's own store: no --allow needed)."""
    base = tmp_path_factory.mktemp("deploy-root")
    make_root(base / "collections", base / "collections" / "cogs", scenes=1)
    return base / "collections"


# The image: deploy/Dockerfile's ENTRYPOINT + CMD and ENV -------------------------------


def _image_run(root: Path) -> tuple[list[str], dict[str, str], int, int]:
    img = image()
    paths = {dest: str(REPO / src) for src, dest in img.copies if dest.startswith("/etc/")}
    paths["/data/collections"] = str(root)  # the volume `docker run -v` mounts there
    port, http = free_port(), free_port()
    env = _environment(
        {k: remap(v, paths) for k, v in img.env.items()},
        {
            "COGFLIGHT_HOST": "127.0.0.1",
            "COGFLIGHT_PORT": str(port),
            "COGFLIGHT_HTTP_PORT": str(http),
        },
    )
    argv = [remap(a, paths) for a in img.entrypoint + img.cmd]
    return argv, env, port, http


def test_image_command_serves_and_stops_cleanly(root: Path, tmp_path: Path) -> None:
    argv, env, port, http = _image_run(root)
    assert argv[1:] == ["serve", "--root", str(root)]
    assert env["COGFLIGHT_CONFIG"] == str(DEPLOY / "cogflight.toml")
    with serving(argv, env, f"grpc://127.0.0.1:{port}", tmp_path, http_port=http) as served:
        health = _action(served, "health")
        assert (health["collections"], health["unavailable"]) == (2, {})
        info = _read_everything(served, query(chip_size=32))
        assert [str(loc.uri.decode()) for loc in info.endpoints[0].locations] == [
            f"grpc://127.0.0.1:{port}"
        ]
        assert _stop(served) == 0, served.output()


@needs_http
def test_image_health_check_passes(root: Path, tmp_path: Path) -> None:
    argv, env, port, http = _image_run(root)
    with serving(argv, env, f"grpc://127.0.0.1:{port}", tmp_path, http_port=http) as served:
        _check_http(served)


# The Kubernetes pod: the image, then the Deployment's args, env and mounted volumes -----


def _pod_run(
    root: Path, tmp_path: Path, secrets: dict[str, bytes]
) -> tuple[list[str], dict[str, str], int, int, dict[str, str]]:
    """What the kubelet would start, with each volume a directory under ``tmp_path``."""
    workload = one("Deployment")
    c = container(workload)
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    paths = {m["mountPath"]: str(tmp_path / "volumes" / m["name"]) for m in c["volumeMounts"]}
    for mount in c["volumeMounts"]:
        directory = Path(paths[mount["mountPath"]])
        directory.mkdir(parents=True)
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            data = one("ConfigMap", volume["configMap"]["name"])["data"]
            for key, text in data.items():
                (directory / key).write_text(remap(text, paths))
        elif "secret" in volume:
            for key in one("Secret", volume["secret"]["secretName"])["stringData"]:
                (directory / key).write_bytes(secrets[key])
    args = list(c["args"])
    args[args.index("--root") + 1] = str(root)  # the Collections the bucket would hold
    port, http = free_port(), free_port()
    env = _environment(
        {k: remap(v, paths) for k, v in image().env.items()},
        {k: remap(v, paths) for k, v in container_env(c).items()},
        {
            "COGFLIGHT_HOST": "127.0.0.1",
            "COGFLIGHT_PORT": str(port),
            "COGFLIGHT_HTTP_PORT": str(http),
        },
    )
    return image().entrypoint + args, env, port, http, paths


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tls_material(tmp_path_factory.mktemp("deploy-tls"))


def _secrets(tls: dict[str, Path]) -> dict[str, bytes]:
    return {
        "tokens": f"{TOKEN}\n".encode(),
        "tls.crt": tls["server_cert"].read_bytes(),
        "tls.key": tls["server_key"].read_bytes(),
    }


def test_kubernetes_pod_serves_with_tokens_and_tls(
    root: Path, tmp_path: Path, tls: dict[str, Path]
) -> None:
    argv, env, port, http, _ = _pod_run(root, tmp_path, _secrets(tls))
    ca = tls["ca_cert"].read_bytes()
    advertised = env["COGFLIGHT_ADVERTISE"]
    assert advertised.startswith("grpc+tls://")
    with serving(
        argv,
        env,
        f"grpc+tls://127.0.0.1:{port}",
        tmp_path,
        http_port=http,
        token=TOKEN,
        tls_root=ca,
    ) as served:
        client = served.client()
        try:
            with pytest.raises(flight.FlightUnauthenticatedError):
                list(client.do_action(flight.Action("health", b"")))  # no token
        finally:
            client.close()
        info = _read_everything(served, query(chip_size=32))
        for endpoint in info.endpoints:  # where clients are sent: the Service address
            assert [loc.uri.decode() for loc in endpoint.locations] == [advertised]
        if "http_port" in SETTINGS:
            _check_http(served)
        assert _stop(served) == 0, served.output()


@pytest.mark.skipif("usage_log" not in SETTINGS, reason="the usage_log setting is not here yet")
def test_kubernetes_pod_writes_the_usage_log(
    root: Path, tmp_path: Path, tls: dict[str, Path]
) -> None:
    argv, env, port, http, _ = _pod_run(root, tmp_path, _secrets(tls))
    usage = Path(env["COGFLIGHT_USAGE_LOG"])
    assert usage.is_relative_to(tmp_path / "volumes")  # on the mounted volume
    with serving(
        argv,
        env,
        f"grpc+tls://127.0.0.1:{port}",
        tmp_path,
        http_port=http,
        token=TOKEN,
        tls_root=tls["ca_cert"].read_bytes(),
    ) as served:
        info = _read_everything(served, query(chip_size=32))
        assert _stop(served) == 0, served.output()
    records = [json.loads(line) for line in usage.read_text().splitlines()]
    assert sum(r["chips"] for r in records) == info.total_records


@pytest.mark.parametrize(
    ("secret", "message"), [("cogflight-tokens", b"token file"), ("cogflight-tls", b"cannot serve")]
)
def test_kubernetes_pod_refuses_the_placeholder_secrets(
    root: Path, tmp_path: Path, tls: dict[str, Path], secret: str, message: bytes
) -> None:
    shipped = {k: v.encode() for k, v in one("Secret", secret)["stringData"].items()}
    argv, env, *_ = _pod_run(root, tmp_path, {**_secrets(tls), **shipped})
    done = subprocess.run(_argv(argv), env=env, capture_output=True, timeout=START_S, check=False)
    assert done.returncode == 2, done.stderr.decode()
    assert message in done.stderr


# compose.yaml: the seed and three replicas over an S3 API (moto in place of MinIO) -----


def test_compose_fleet_places_endpoints_on_every_replica(moto_s3, tmp_path: Path) -> None:
    endpoint, s3 = moto_s3
    doc = compose()
    services = doc["services"]
    (bucket,) = re.findall(
        r"mc mb (?:--ignore-existing )?local/(\S+)", " ".join(services["bucket"]["command"])
    )
    s3.create_bucket(Bucket=bucket)
    store = {"http://minio:9000": endpoint}

    seed = services["seed"]
    paths = {
        target: str(DEPLOY / source.removeprefix("./"))
        for source, target, *_ in (v.split(":") for v in seed["volumes"])
    }
    argv = [remap(a, {**paths, **store}) for a in seed["entrypoint"] + seed["command"]]
    done = subprocess.run(
        [*_argv(argv), "--scenes", "2", "--size", "512"],
        env=_environment(seed["environment"]),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()

    names = ("cogflight-1", "cogflight-2", "cogflight-3")
    ports = {name: free_port() for name in names}
    # Each location is a port published on the host: `HOST:8815` of cogflight-1 and so on.
    published = {}
    for name in names:
        (mapping,) = [p for p in services[name]["ports"] if p.endswith(":8815")]
        published[f"localhost:{mapping.split(':')[0]}"] = f"127.0.0.1:{ports[name]}"
    with ExitStack() as stack:
        fleet = [
            stack.enter_context(_replica(name, doc, store, published, ports[name], tmp_path))
            for name in names
        ]
        locations = list(fleet[0].env["COGFLIGHT_ADVERTISE"].split(","))
        assert sorted(locations) == sorted(f"grpc://127.0.0.1:{p}" for p in ports.values())
        if "http_port" in SETTINGS:
            for served in fleet:
                _wait_ready(served)
        # 32 small boxes over the first scene (512 px of 10 m, 2 x 2 tiles of 256 px).
        x0, y0 = 600_000, 5_194_880
        boxes = [
            [x0 + 640 * i + 100, y0 + 1280 * j + 100, x0 + 640 * i + 500, y0 + 1280 * j + 500]
            for i in range(8)
            for j in range(4)
        ]
        q = {
            "v": 1,
            "collection": "demo",
            "chip_size": 32,
            "geometries": {"bbox": boxes, "crs": "EPSG:32633"},
        }
        plans = []
        for served in fleet:
            client = served.client()
            try:
                info = client.get_flight_info(
                    flight.FlightDescriptor.for_command(json.dumps(q)), served.options
                )
            finally:
                client.close()
            plans.append([[loc.uri.decode() for loc in ep.locations] for ep in info.endpoints])
            for where in plans[-1]:  # every endpoint ranks every replica: the failover order
                assert sorted(where) == sorted(locations)
        assert plans[0] == plans[1] == plans[2], "the same placement from any replica"
        assert len(plans[0]) == 3 and len({where[0] for where in plans[0]}) >= 2
        ordinals: list[int] = []
        for ep in info.endpoints:  # each endpoint from its first location
            client = fleet[0].client(ep.locations[0].uri.decode())
            try:
                table = client.do_get(ep.ticket, fleet[0].options).read_all()
            finally:
                client.close()
            ordinals.extend(table.column("ordinal").to_pylist())
        assert info.total_records == len(boxes)
        assert sorted(ordinals) == list(range(info.total_records))
        for served in fleet:
            assert _stop(served) == 0, served.output()


@contextmanager
def _replica(
    name: str,
    doc: dict[str, Any],
    store: dict[str, str],
    published: dict[str, str],
    port: int,
    tmp_path: Path,
) -> Iterator[Served]:
    """One replica of compose.yaml: the image's entrypoint with the service's command and
    environment, its config file where the service mounts it."""
    img = image()
    service = doc["services"][name]
    configs = {
        c["target"]: str(DEPLOY / doc["configs"][c["source"]]["file"]) for c in service["configs"]
    }
    http = free_port()
    env = _environment(
        {k: remap(v, configs) for k, v in img.env.items()},
        {k: remap(str(v), {**configs, **published}) for k, v in service["environment"].items()},
        {
            "COGFLIGHT_HOST": "127.0.0.1",
            "COGFLIGHT_PORT": str(port),
            "COGFLIGHT_HTTP_PORT": str(http),
        },
    )
    argv = [remap(a, store) for a in img.entrypoint + service["command"]]
    with serving(argv, env, f"grpc://127.0.0.1:{port}", tmp_path, http_port=http) as served:
        yield served
