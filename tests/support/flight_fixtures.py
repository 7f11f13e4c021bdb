"""Shared pieces of the Flight tests: a served root, queries, TLS material."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from pyarrow import flight

import catalog
from catalog.testing import synthetic_scene, write_cog

GT = (500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0)


def make_root(root: Path, data: Path, scenes: int = 4) -> dict[str, catalog.Collection]:
    """Two Collections under ``root``: 'alpha' (scenes x 2 bands) and 'beta' (1 scene)."""
    data.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, str]] = {}
    for i in range(scenes):
        sid = f"s{i}"
        files[sid] = {}
        for b, band in enumerate(("red", "nir")):
            p = data / f"{sid}_{band}.tif"
            write_cog(p, synthetic_scene(512, 512, 1, 10 * i + b), nodata=0, epsg=32633,
                      geotransform=(GT[0] + 1000 * (i % 2), 10, 0, GT[3], 0, -10), tile=256)
            files[sid][band] = str(p)
    alpha = catalog.build_from_files(
        files, name="alpha", progress=False,
        datetime={f"s{i}": dt.date(2024, 1 + i, 1) for i in range(scenes)},
    )
    alpha.save(root / "alpha.parquet")
    beta = catalog.build_from_files({"only": files["s0"]}, name="beta", progress=False)
    beta.save(root / "beta.parquet")
    return {"alpha": alpha, "beta": beta}


def lonlat_box(c0: int, r0: int, w: int, h: int) -> list[float]:
    """A lon/lat bbox around pixels (c0, r0, w, h) of the first scene's grid (shrunk a little)."""
    from pyproj import Transformer

    t = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    x0, y0 = GT[0] + (c0 + 0.3) * GT[1], GT[3] + (r0 + 0.3) * GT[5]
    x1, y1 = GT[0] + (c0 + w - 0.3) * GT[1], GT[3] + (r0 + h - 0.3) * GT[5]
    lon0, lat0 = t.transform(x0, y1)
    lon1, lat1 = t.transform(x1, y0)
    return [lon0, lat0, lon1, lat1]


def query(**fields: Any) -> dict[str, Any]:
    doc = {"v": 1, "collection": "alpha", "geometries": {"bbox": lonlat_box(110, 10, 100, 80)},
           "chip_size": 64}
    doc.update(fields)
    return doc


def ticket(doc: dict[str, Any]) -> flight.Ticket:
    return flight.Ticket(json.dumps(doc).encode())


def read_all(client: flight.FlightClient, info: flight.FlightInfo, **kw: Any) -> list:
    out = []
    for ep in info.endpoints:
        out.append(client.do_get(ep.ticket, **kw).read_all())
    return out


def tls_material(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    ca_key = key()
    ca = (x509.CertificateBuilder().subject_name(name("cogflight test CA"))
          .issuer_name(name("cogflight test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def leaf(cn: str, server: bool) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        k = key()
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
             .public_key(k.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1)))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        return b.sign(ca_key, hashes.SHA256()), k

    out: dict[str, Path] = {}

    def write(label: str, cert: x509.Certificate, k: Any | None) -> None:
        out[f"{label}_cert"] = directory / f"{label}.crt"
        out[f"{label}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if k is not None:
            out[f"{label}_key"] = directory / f"{label}.key"
            out[f"{label}_key"].write_bytes(k.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))

    write("ca", ca, ca_key)
    write("server", *leaf("127.0.0.1", True))
    write("client", *leaf("cogflight client", False))
    return out
