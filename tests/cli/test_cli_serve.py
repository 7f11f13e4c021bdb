"""`cogflight serve` configuration: one flag per setting, the environment as defaults, every
engine limit reaching the engine of every worker, and docs/configuration.md as the model says."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import pyarrow as pa
import pytest
from pyarrow import flight

from cogflight._cli import build_parser
from cogflight._serve_cmd import server_from_args, settings_from_args
from cogflight_core import (
    Config,
    EngineSettings,
    InvalidArgumentError,
    ServerSettings,
    environment_table,
)
from flight_server import Server, ServerConfig
from tests.support.flight_fixtures import lonlat_box, make_root

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
# The flags `cogflight serve` had before they were generated: they must keep working.
OLD_FLAGS = ["--root", "--host", "--port", "--workers", "--cache-bytes", "--advertise",
             "--shards", "--max-streams", "--token-file", "--tls-cert", "--tls-key",
             "--tls-client-ca", "--anonymous", "--region", "--endpoint"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("serve-config")
    make_root(base / "root", base / "data", scenes=1)  # one scene: one chip per geometry
    return base / "root"


def _serve_args(*argv: str):
    return build_parser().parse_args(["serve", *argv])


def _serve_options() -> set[str]:
    parser = build_parser()
    serve = next(a for a in parser._actions if hasattr(a, "choices") and a.choices
                 and "serve" in a.choices).choices["serve"]
    return {s for a in serve._actions for s in a.option_strings}


def test_configuration_doc_holds_exactly_the_environment_table() -> None:
    lines = DOC.read_text().splitlines()
    start = lines.index(environment_table().splitlines()[0])
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    assert "\n".join(lines[start:end]) == environment_table(), (
        "docs/configuration.md's table differs from the configuration model; paste "
        "cogflight_core.environment_table() there")
    assert sum(line.startswith("| variable |") for line in lines) == 1


def test_one_serve_flag_per_engine_and_server_setting() -> None:
    options = _serve_options()
    for cls in (EngineSettings, ServerSettings):
        for f in dataclasses.fields(cls):
            assert "--" + f.name.replace("_", "-") in options, f.name
    assert set(OLD_FLAGS) <= options


def test_environment_gives_defaults_and_flags_win() -> None:
    base = Config.from_env({"COGFLIGHT_CACHE_BYTES": "2MiB", "COGFLIGHT_MAX_CHIPS": "7",
                            "COGFLIGHT_PORT": "9999", "COGFLIGHT_ADVERTISE": "grpc://env:1"})
    engine, server = settings_from_args(_serve_args("--root", "r"), base)
    assert (engine.cache_bytes, engine.max_chips, server.port) == (2 * 1024**2, 7, 9999)
    assert server.advertise == ("grpc://env:1",)
    engine, server = settings_from_args(_serve_args(
        "--root", "r", "--cache-bytes", "1MiB", "--port", "0", "--decode-threads", "3",
        "--advertise", "grpc://a:1", "--advertise", "grpc://b:2,grpc://c:3",
        "--token-file", "tokens", "--shards", "4"), base)
    assert (engine.cache_bytes, engine.max_chips, engine.decode_threads) == (1024**2, 7, 3)
    assert (server.port, server.shards, server.token_file) == (0, 4, "tokens")
    assert server.advertise == ("grpc://a:1", "grpc://b:2", "grpc://c:3")
    with pytest.raises(InvalidArgumentError, match="--workers"):
        settings_from_args(_serve_args("--root", "r", "--workers", "0"), base)


def test_server_keyword_api(root: Path) -> None:
    srv = Server(str(root), port=0, cache_bytes="2MiB", max_chips=3, shards=2)
    cfg = srv.config
    assert (cfg.engine.cache_bytes, cfg.engine.max_chips, cfg.server.shards) == (2 * 1024**2, 3, 2)
    assert (cfg.port, cfg.cache_bytes, cfg.max_streams) == (0, 2 * 1024**2, 16)  # flat names
    again = pickle.loads(pickle.dumps(cfg))  # what a spawned worker receives
    assert (again.engine, again.server, again.root) == (cfg.engine, cfg.server, cfg.root)
    explicit = ServerConfig(str(root), engine=EngineSettings(max_chips=9), max_streams=2)
    assert (explicit.engine.max_chips, explicit.server.max_streams) == (9, 2)
    with pytest.raises(TypeError, match="cache_byte"):
        Server(str(root), cache_byte=1)
    with pytest.raises(InvalidArgumentError, match="workers"):
        Server(str(root), workers=0)


def _plan(location: str, geometries: int, chip_size: int = 16) -> flight.FlightInfo:
    query = {"v": 1, "collection": "alpha", "chip_size": chip_size,
             "geometries": {"bbox": [lonlat_box(110 + 20 * i, 10, 16, 16)
                                     for i in range(geometries)]}}
    client = flight.connect(location)
    try:
        return client.get_flight_info(flight.FlightDescriptor.for_command(json.dumps(query)))
    finally:
        client.close()


def test_serve_flags_reach_the_engine_of_every_worker(root: Path) -> None:
    args = _serve_args("--root", str(root), "--port", "0", "--workers", "2", "--max-chips", "5",
                       "--max-chip-pixels", "1024", "--cache-bytes", "3MiB",
                       "--decode-threads", "2", "--max-requests", "3", "--coalesce-bytes", "1KiB",
                       "--max-run-bytes", "2MiB")
    with server_from_args(args).start() as srv:
        engine = srv.service.engine  # worker 0, in this process
        assert engine.settings == srv.config.engine
        assert engine.settings.max_run_bytes == 2 * 1024**2
        assert engine.cache.max_bytes == 3 * 1024**2
        assert (engine.max_chips, engine.max_chip_pixels) == (5, 1024)
        assert (engine.decode_threads, engine.max_requests, engine.coalesce_bytes) == (2, 3, 1024)
        assert len(srv.locations) == 2
        for location in srv.locations:  # worker 1 is a spawned process: ask it over Flight
            assert _plan(location, 5).total_records == 5
            with pytest.raises(pa.ArrowInvalid, match="limit of 5"):  # INVALID_ARGUMENT
                _plan(location, 6)
            with pytest.raises(pa.ArrowInvalid, match="1024 pixels"):
                _plan(location, 1, chip_size=33)
