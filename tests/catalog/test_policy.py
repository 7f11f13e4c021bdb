"""The data access policy alone: prefixes, schemes, internal hosts, path tricks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from catalog._policy import AccessPolicy
from cogflight_core import PermissionDeniedError


def resolver(table: dict[str, list[str]]):
    return lambda host: table.get(host, [])


PUBLIC = resolver(
    {
        "data.example.org": ["93.184.216.34"],
        "evil.example": ["169.254.169.254"],
        "intranet.example": ["10.1.2.3"],
        "v6.example": ["::1"],
        "mapped.example": ["::ffff:127.0.0.1"],
    }
)


@pytest.mark.parametrize(
    "href",
    [
        "s3://bucket/prefix/a.tif",
        "s3://bucket/prefix/sub/dir/b.tif",
        "https://data.example.org/cogs/x.tif",
        "https://data.example.org:443/cogs/x.tif",
    ],
)
def test_allowed_prefixes_allow(href: str) -> None:
    policy = AccessPolicy(["s3://bucket/prefix", "https://data.example.org/cogs/"], resolver=PUBLIC)
    policy.check(href)


@pytest.mark.parametrize(
    ("href", "message"),
    [
        ("/etc/passwd", "outside the server's data access policy"),
        ("file:///etc/passwd", "outside"),
        ("s3://bucket/prefixed/a.tif", "outside"),  # segment boundary: prefix != prefixed
        ("s3://bucket/prefix/../secret/a.tif", "outside"),
        ("s3://other/prefix/a.tif", "outside"),
        ("gs://bucket/prefix/a.tif", "outside"),  # another store of the same name
        ("https://data.example.org/other/x.tif", "outside"),
        ("https://data.example.org/cogs/../admin", "outside"),
        ("http://data.example.org/cogs/x.tif", "outside"),  # scheme is part of the prefix
        ("https://data.example.org:8443/cogs/x.tif", "outside"),  # and so is the port
        ("ftp://data.example.org/cogs/x.tif", "unsupported scheme"),
        ("https://user:pw@data.example.org/cogs/x.tif", "credentials"),
        ("", "expected a path or URL"),
    ],
)
def test_everything_else_is_refused(href: str, message: str) -> None:
    policy = AccessPolicy(["s3://bucket/prefix", "https://data.example.org/cogs/"], resolver=PUBLIC)
    with pytest.raises(PermissionDeniedError, match=message):
        policy.check(href, asset="scene s1 band red")


@pytest.mark.parametrize(
    "href",
    [
        "http://127.0.0.1:8080/admin/secret",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x",
        "http://10.0.0.5/x",
        "http://0.0.0.0/x",
        "http://100.64.0.1/x",  # carrier-grade NAT
        "https://evil.example/cogs/x.tif",  # a public name that resolves to metadata
        "https://intranet.example/cogs/x.tif",
        "https://v6.example/cogs/x.tif",
        "https://mapped.example/cogs/x.tif",  # ::ffff:127.0.0.1
        "https://nowhere.example/cogs/x.tif",  # does not resolve
    ],
)
def test_wildcard_hosts_never_reach_internal_addresses(href: str) -> None:
    policy = AccessPolicy(["https://*/", "http://*/"], resolver=PUBLIC)
    with pytest.raises(PermissionDeniedError, match=r"address|resolve"):
        policy.check(href)


def test_wildcards_allow_public_hosts() -> None:
    policy = AccessPolicy(["https://*/", "https://*.example.org/cogs"], resolver=PUBLIC)
    policy.check("https://data.example.org/anything.tif")
    AccessPolicy(["https://*.example.org/cogs"], resolver=PUBLIC).check(
        "https://data.example.org/cogs/a.tif"
    )
    with pytest.raises(PermissionDeniedError, match="outside"):
        AccessPolicy(["https://*.example.org/cogs"], resolver=PUBLIC).check(
            "https://data.example.com/cogs/a.tif"
        )


def test_an_internal_host_is_refused_unless_allowed_by_name() -> None:
    policy = AccessPolicy(["s3://bucket/"], resolver=PUBLIC)
    with pytest.raises(PermissionDeniedError, match="outside"):
        policy.check("http://127.0.0.1:8080/admin/secret")
    explicit = AccessPolicy(["http://127.0.0.1:8080/data/"], resolver=PUBLIC)
    explicit.check("http://127.0.0.1:8080/data/x.tif")
    with pytest.raises(PermissionDeniedError, match="outside"):
        explicit.check("http://127.0.0.1:8080/admin/secret")


def test_local_directories_resolve_dots_and_symlinks(tmp_path: Path) -> None:
    allowed = tmp_path / "cogs"
    allowed.mkdir()
    (allowed / "a.tif").write_bytes(b"II*\x00")
    secret = tmp_path / "secret.txt"
    secret.write_text("s")
    os.symlink(secret, allowed / "link.tif")
    policy = AccessPolicy([str(allowed)])
    policy.check(str(allowed / "a.tif"))
    policy.check(f"file://{allowed / 'a.tif'}")
    for href in (
        str(allowed / ".." / "secret.txt"),
        str(allowed / "link.tif"),
        str(secret),
        f"{allowed}-other/a.tif",
    ):
        with pytest.raises(PermissionDeniedError):
            policy.check(href)


def test_for_root_allows_the_roots_own_store(tmp_path: Path) -> None:
    s3 = AccessPolicy.for_root("s3://bucket/collections", resolver=PUBLIC)
    s3.check("s3://bucket/imagery/a.tif")
    with pytest.raises(PermissionDeniedError):
        s3.check("s3://another/a.tif")
    local = AccessPolicy.for_root(str(tmp_path), ["s3://imagery/"])
    local.check(str(tmp_path / "x.parquet"))
    local.check("s3://imagery/a.tif")
    with pytest.raises(PermissionDeniedError):
        local.check("/etc/passwd")


def test_open_policy_allows_everything() -> None:
    AccessPolicy.open().check("/etc/passwd")
    assert AccessPolicy.open().is_open


def test_messages_never_show_query_strings() -> None:
    policy = AccessPolicy(["s3://bucket/"], resolver=PUBLIC)
    with pytest.raises(PermissionDeniedError) as info:
        policy.check("https://data.example.org/x.tif?X-Amz-Signature=SECRET")
    assert "SECRET" not in str(info.value)
