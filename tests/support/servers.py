"""Real servers on loopback for tests and benchmarks, used as context managers.

- :class:`RangeServer`: static files over HTTP/1.1 with single-range requests,
  injected latency (to first byte) and an optional bandwidth cap, counting
  every request and byte. Paths ``/bucket/key`` also make it a minimal
  path-style, anonymous S3 endpoint for GETs.
- :class:`StacServer`: a STAC API (landing page, conformance, collections,
  item search over GET and POST with token paging) over in-memory items.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["RangeServer", "RequestRecord", "StacServer"]

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class RequestRecord:
    """One request the server answered."""

    method: str
    path: str
    query: str
    range: str | None
    status: int
    sent: int
    headers: dict[str, str]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True


class _LoopbackServer:
    """Start/stop plumbing shared by the servers."""

    handler: type[BaseHTTPRequestHandler]

    def __init__(self) -> None:
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        server = self

        class Handler(self.handler):  # type: ignore[misc, valid-type, name-defined]
            owner = server

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class _RangeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: RangeServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _finish(self, status: int, rng: str | None, sent: int) -> None:
        parts = urlsplit(self.path)
        self.owner._record(RequestRecord(self.command, parts.path, parts.query, rng, status, sent,
                                         {k.lower(): v for k, v in self.headers.items()}))

    def _error(self, status: int, rng: str | None) -> None:
        self._finish(status, rng, 0)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve(self, body: bool) -> None:
        self.owner._enter()
        try:
            self._respond(body)
        finally:
            self.owner._leave()

    def _respond(self, body: bool) -> None:
        owner = self.owner
        if owner.latency:
            time.sleep(owner.latency)
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        target = (owner.root / rel).resolve()
        rng = self.headers.get("Range")
        if owner.root not in target.parents or not target.is_file():
            self._error(HTTPStatus.NOT_FOUND, rng)
            return
        if owner.fail_paths and rel in owner.fail_paths:
            self._error(owner.fail_paths[rel], rng)
            return
        with owner._lock:
            transient = owner.transient_failures.get(rel, 0)
            if transient:
                owner.transient_failures[rel] = transient - 1
        if transient:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, rng)
            return
        size = target.stat().st_size
        start, end = 0, size
        status = HTTPStatus.OK
        if rng:
            m = _RANGE.match(rng.strip())
            if not m or (not m.group(1) and not m.group(2)):
                self._error(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, rng)
                return
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)) + 1, size) if m.group(2) else size
            else:
                start, end = max(0, size - int(m.group(2))), size
            if start >= size:
                self._finish(416, rng, 0)
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = HTTPStatus.PARTIAL_CONTENT
        length = end - start
        self.send_response(status)
        self.send_header("Content-Type", "image/tiff")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        self.send_header("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")
        self.send_header("ETag", f'"{size}-{int(target.stat().st_mtime)}"')
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        # Record before the body goes out, so a client that has its bytes sees the count.
        self._finish(int(status), rng, length if body else 0)
        if body:
            with open(target, "rb") as fh:
                if not owner.bandwidth:  # zero-copy from the page cache, as a real server
                    try:
                        self.connection.sendfile(fh, offset=start, count=length)
                    except OSError:  # the client went away mid-body
                        self.close_connection = True
                    return
                fh.seek(start)
                remaining = length
                while remaining:
                    chunk = fh.read(min(remaining, 256 * 1024))
                    if not chunk:
                        break
                    if owner.bandwidth:
                        time.sleep(len(chunk) / owner.bandwidth)
                    self.wfile.write(chunk)
                    remaining -= len(chunk)


class RangeServer(_LoopbackServer):
    """Serve files under ``root`` by HTTP range requests on a free loopback port.

    Args:
        root: directory to serve.
        latency: seconds to wait before answering each request (time to first byte).
        bandwidth: bytes per second per connection, or None for no cap.
    """

    handler = _RangeHandler

    def __init__(self, root: str | Path, *, latency: float = 0.0,
                 bandwidth: float | None = None) -> None:
        super().__init__()
        self.root = Path(root).resolve()
        self.latency = latency
        self.bandwidth = bandwidth
        self.fail_paths: dict[str, int] = {}
        self.transient_failures: dict[str, int] = {}  # path -> how many 503s before success
        self._lock = threading.Lock()
        self.records: list[RequestRecord] = []
        self.inflight = 0
        self.max_inflight = 0

    def _enter(self) -> None:
        with self._lock:
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)

    def _leave(self) -> None:
        with self._lock:
            self.inflight -= 1

    def _record(self, rec: RequestRecord) -> None:
        with self._lock:
            self.records.append(rec)

    def url_for(self, path: str | Path) -> str:
        rel = Path(path).resolve().relative_to(self.root) if Path(path).is_absolute() else path
        return f"{self.url}/{Path(rel).as_posix()}"

    def reset(self) -> None:
        with self._lock:
            self.records.clear()
            self.max_inflight = self.inflight

    @property
    def requests(self) -> int:
        with self._lock:
            return len(self.records)

    @property
    def bytes_sent(self) -> int:
        with self._lock:
            return sum(r.sent for r in self.records)

    def per_path(self) -> Counter[str]:
        with self._lock:
            return Counter(r.path for r in self.records)


def _bbox_intersects(a: Iterable[float], b: Iterable[float]) -> bool:
    ax0, ay0, ax1, ay1 = a
    bx0, by0, bx1, by1 = b
    return ax0 <= bx1 and bx0 <= ax1 and ay0 <= by1 and by0 <= ay1


class _StacHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: StacServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, obj: Any, status: int = 200) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/geo+json" if "features" in obj
                         else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/")
        self.owner.calls.append(("GET", path))
        base = self.owner.url
        if path == "":
            self._json(self.owner.landing())
        elif path == "/conformance":
            self._json({"conformsTo": StacServer.CONFORMS})
        elif path == "/collections":
            self._json({"collections": [self.owner.collection_doc(c)
                                        for c in self.owner.collection_ids()],
                        "links": [{"rel": "self", "href": f"{base}/collections"}]})
        elif path.startswith("/collections/"):
            cid = path.split("/")[2]
            if cid not in self.owner.collection_ids():
                self._json({"code": "NotFound", "description": cid}, 404)
            else:
                self._json(self.owner.collection_doc(cid))
        elif path == "/search":
            q = {k: v[0] for k, v in parse_qs(parts.query).items()}
            params: dict[str, Any] = {}
            if "collections" in q:
                params["collections"] = q["collections"].split(",")
            if "bbox" in q:
                params["bbox"] = [float(v) for v in q["bbox"].split(",")]
            for key in ("datetime", "token", "limit", "ids"):
                if key in q:
                    params[key] = q[key]
            if "ids" in params:
                params["ids"] = params["ids"].split(",")
            self._json(*self.owner.search(params, method="GET"))
        else:
            self._json({"code": "NotFound"}, 404)

    def do_POST(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        self.owner.calls.append(("POST", path))
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if path != "/search":
            self._json({"code": "NotFound"}, 404)
            return
        self._json(*self.owner.search(body, method="POST"))


class StacServer(_LoopbackServer):
    """A STAC API over in-memory items: search with bbox/datetime/ids/query and paging."""

    handler = _StacHandler
    CONFORMS: ClassVar[list[str]] = [
        "https://api.stacspec.org/v1.0.0/core",
        "https://api.stacspec.org/v1.0.0/item-search",
        "https://api.stacspec.org/v1.0.0/item-search#query",
        "https://api.stacspec.org/v1.0.0/collections",
        "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
        "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    ]

    def __init__(self, items: list[dict[str, Any]], *, page_size: int = 10) -> None:
        super().__init__()
        self.items = items
        self.page_size = page_size
        self.calls: list[tuple[str, str]] = []

    def collection_ids(self) -> list[str]:
        return sorted({str(i.get("collection")) for i in self.items})

    def landing(self) -> dict[str, Any]:
        base = self.url
        return {
            "type": "Catalog", "stac_version": "1.0.0", "id": "loopback", "description": "test",
            "conformsTo": self.CONFORMS,
            "links": [
                {"rel": "self", "href": base + "/", "type": "application/json"},
                {"rel": "root", "href": base + "/", "type": "application/json"},
                {"rel": "conformance", "href": base + "/conformance"},
                {"rel": "data", "href": base + "/collections", "type": "application/json"},
                {"rel": "search", "href": base + "/search", "type": "application/geo+json",
                 "method": "GET"},
                {"rel": "search", "href": base + "/search", "type": "application/geo+json",
                 "method": "POST"},
            ],
        }

    def collection_doc(self, cid: str) -> dict[str, Any]:
        return {
            "type": "Collection", "stac_version": "1.0.0", "id": cid, "description": cid,
            "license": "proprietary",
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                       "temporal": {"interval": [[None, None]]}},
            "links": [{"rel": "self", "href": f"{self.url}/collections/{cid}"},
                      {"rel": "root", "href": self.url + "/"}],
        }

    def _matches(self, item: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
        if params.get("collections") and item.get("collection") not in params["collections"]:
            return False
        if params.get("ids") and item["id"] not in params["ids"]:
            return False
        if params.get("bbox") and not _bbox_intersects(item["bbox"], params["bbox"]):
            return False
        dt_param = params.get("datetime")
        if dt_param:
            start, _, end = str(dt_param).partition("/")
            when = item["properties"]["datetime"]
            if start not in ("", "..") and when < start.replace("+00:00", "Z"):
                return False
            if end not in ("", "..") and when > end.replace("+00:00", "Z"):
                return False
        for key, cond in (params.get("query") or {}).items():
            value = item["properties"].get(key)
            for op, ref in cond.items():
                ok = {"lt": lambda v, r: v < r, "lte": lambda v, r: v <= r,
                      "gt": lambda v, r: v > r, "gte": lambda v, r: v >= r,
                      "eq": lambda v, r: v == r}[op]
                if value is None or not ok(value, ref):
                    return False
        return True

    def search(self, params: Mapping[str, Any], method: str) -> tuple[dict[str, Any], int]:
        hits = [i for i in self.items if self._matches(i, params)]
        limit = min(int(params.get("limit") or self.page_size), self.page_size)
        start = int(str(params.get("token") or "0"))
        page = hits[start : start + limit]
        links = [{"rel": "root", "href": self.url + "/"}]
        if start + limit < len(hits):
            token = str(start + limit)
            if method == "POST":
                links.append({"rel": "next", "href": f"{self.url}/search", "method": "POST",
                              "body": {"token": token}, "merge": True,
                              "type": "application/geo+json"})
            else:
                query = {k: (",".join(map(str, v)) if isinstance(v, list) else v)
                         for k, v in params.items() if k != "token"}
                qs = "&".join(f"{k}={v}" for k, v in query.items())
                links.append({"rel": "next", "href": f"{self.url}/search?{qs}&token={token}",
                              "method": "GET", "type": "application/geo+json"})
        return ({"type": "FeatureCollection", "features": page, "links": links,
                 "numberMatched": len(hits), "numberReturned": len(page)}, 200)
