"""Loopback servers for tests and benchmarks of remote data (no network): a static HTTP file
server with range requests and injectable faults, and an S3-compatible server (moto).

    with http_server(root) as server:            # http://127.0.0.1:PORT/ serving `root`
        server.faults["/scene.tif"] = "404"      # or "403", "truncate", "flaky:2", "slow:3",
                                                 # "auth", "redirect:URL", "edl:LOGIN_URL",
                                                 # "login:USER:PASSWORD" (see _login_flow),
                                                 # "sign" (a URL signer), "signed" (needs
                                                 # ?sig=ok, as a signer's URLs have)
        url = server.url("scene.tif")
        server.requests["/scene.tif"]            # requests that path got (gets: GETs only,
                                                 # bytes_sent: body bytes that arrived,
                                                 # auth_seen: each request's Authorization)

    with s3_server() as endpoint:                # sets AWS_ENDPOINT_URL and test credentials
        client = s3_client(); client.create_bucket(Bucket="b")

Both bind 127.0.0.1 on a free port, run in a daemon thread and are stopped on exit.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

STOP_TIMEOUT_S = 10.0


class _Handler(SimpleHTTPRequestHandler):
    """Static files with single-range GETs (GDAL's /vsicurl/ needs them) and faults."""

    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _fault(self) -> bool:
        path, _, query = self.path.partition("?")
        with self.server.lock:
            self.server.requests[path] += 1
            self.server.gets[path] += self.command == "GET"
            self.server.auth_seen[path].append(self.headers.get("Authorization"))
            seen = self.server.requests[path]
        fault = self.server.faults.get(path, "")
        if fault.split(":", 1)[0] in ("redirect", "login", "edl"):
            return self._login_flow(fault, path, query)
        if fault == "sign":                 # a URL signer: ?href=URL -> {"href": URL?sig=ok}
            href = urllib.parse.parse_qs(query).get("href", [""])[0]
            if not href:
                return self._status(400)
            body = json.dumps({"href": href + ("&" if "?" in href else "?") + "sig=ok"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return True
        if fault == "signed" and "sig=ok" not in query.split("&"):
            return self._status(403)
        if fault.startswith("slow:"):
            time.sleep(float(fault.split(":")[1]))
        if fault.startswith("flaky:") and seen <= int(fault.split(":")[1]):
            return self._status(503)
        if fault == "404":
            return self._status(404)
        if fault == "403" or (fault == "auth" and "Authorization" not in self.headers):
            return self._status(403)
        return False

    def _status(self, code: int, headers: dict[str, str] | None = None) -> bool:
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True

    def _login_flow(self, fault: str, path: str, query: str) -> bool:
        """redirect:URL answers 307 to URL. An Earthdata-style login: edl:LOGIN_URL serves the
        file to a request carrying the cookie edl=ok, sets that cookie for ?code=ok, and else
        redirects to LOGIN_URL?back=<this URL>; login:USER:PASSWORD (at LOGIN_URL) redirects
        back with ?code=ok when the request has that basic auth, else answers 401."""
        kind, _, arg = fault.partition(":")
        if kind == "redirect":
            return self._status(307, {"Location": arg})
        if kind == "login":
            expected = "Basic " + base64.b64encode(arg.encode()).decode("ascii")
            if self.headers.get("Authorization") != expected:
                return self._status(401, {"WWW-Authenticate": 'Basic realm="login"'})
            back = urllib.parse.parse_qs(query).get("back", [""])[0]
            return self._status(302, {"Location": back + "?code=ok"})
        if "edl=ok" in (self.headers.get("Cookie") or ""):
            return False                                      # logged in: serve the file
        if query == "code=ok":
            return self._status(302, {"Set-Cookie": "edl=ok; Path=/", "Location": path})
        here = f"http://{self.headers.get('Host')}{path}"
        return self._status(302, {"Location": f"{arg}?back={urllib.parse.quote(here)}"})

    def _served_file(self) -> Path | None:
        """The file the request names, or None once a fault or a 404 has been answered."""
        if self._fault():
            return None
        file = Path(self.translate_path(self.path))
        if not file.is_file():
            self._status(404)
            return None
        return file

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        file = self._served_file()
        if file is None:
            return
        self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(file.stat().st_size))
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        file = self._served_file()
        if file is None:
            return
        size = file.stat().st_size
        found = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        start, end = (int(found.group(1)), int(found.group(2) or size - 1)) if found \
            else (0, size - 1)
        end = min(end, size - 1)
        self.send_response(206 if found else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        if found:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        path = self.path.split("?", 1)[0]
        with open(file, "rb") as handle:
            if self.server.faults.get(path) == "truncate":
                handle.seek(start)
                self._send_half(path, handle.read(end - start + 1))
            else:
                self._send_file(path, handle, start, end - start + 1)

    def _send_file(self, path: str, handle, start: int, count: int) -> None:
        """The byte range by sendfile(2): the kernel copies page cache to socket, so the server
        costs little CPU (a real object store's CPU is not on the reading machine either; the
        loader bench shares its cores with this server)."""
        try:
            sent = self.connection.sendfile(handle, start, count)
        except OSError:  # the client hung up (GDAL stops a GET once it has the headers)
            self.close_connection = True
            return
        with self.server.lock:
            self.server.bytes_sent[path] += sent

    def _send_half(self, path: str, body: bytes) -> None:
        """Announce the full length, send half, hang up (the "truncate" fault)."""
        body = body[: len(body) // 2]
        self.close_connection = True
        for start in range(0, len(body), 65536):  # count what reached the client
            chunk = body[start:start + 65536]
            try:
                self.wfile.write(chunk)
            except OSError:
                return
            with self.server.lock:
                self.server.bytes_sent[path] += len(chunk)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, root: Path, port: int = 0):
        self.root = Path(root)
        self.faults: dict[str, str] = {}
        self.requests: Counter = Counter()     # path -> requests
        self.gets: Counter = Counter()         # path -> GET requests (no HEAD)
        self.bytes_sent: Counter = Counter()   # path -> body bytes served
        self.auth_seen: defaultdict = defaultdict(list)   # path -> Authorization per request
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", port),
                         lambda *a: _Handler(*a, directory=str(self.root)))

    def url(self, relative: str = "") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{relative}"


@contextlib.contextmanager
def http_server(root, port: int = 0) -> Iterator[_Server]:
    """A static file server for `root` on 127.0.0.1 (see the module docstring); port 0 = any
    free port."""
    server = _Server(root, port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(STOP_TIMEOUT_S)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1"}


@contextlib.contextmanager
def s3_server(credentials: bool = True) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1; yields the endpoint URL. While it runs AWS_ENDPOINT_URL
    points at it (boto3 and, through remote.gdal_options, GDAL), with test credentials unless
    `credentials` is False. The environment is restored and the server stopped on exit."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in (*TEST_CREDENTIALS, "AWS_ENDPOINT_URL",
                                            "AWS_PROFILE", "AWS_SESSION_TOKEN",
                                            "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
                                            "AWS_EC2_METADATA_DISABLED")}
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"  # no instance-metadata probe off-host
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull  # never the developer's profiles
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ.pop("AWS_PROFILE", None)
    for key, value in TEST_CREDENTIALS.items():
        if credentials or key == "AWS_DEFAULT_REGION":
            os.environ[key] = value
        else:
            os.environ.pop(key, None)
    try:
        yield endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


def s3_client():
    """A boto3 S3 client for the current AWS_ENDPOINT_URL (test helper)."""
    import boto3
    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"),
                        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))


# --------------------------------------------------------------------------- STAC fixtures

def stac_item(item_id: str, collection: str, datetime: str, bbox, assets: dict) -> dict:
    """A minimal STAC 1.0 item (eo extension) with relative asset hrefs."""
    w, s, e, n = bbox
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id,
            "collection": collection, "bbox": list(bbox),
            "geometry": {"type": "Polygon",
                         "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
            "properties": {"datetime": datetime},
            "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
            "links": [], "assets": assets}


def eo_asset(href: str, wavelength_nm, fwhm_nm=None, names=None, roles=("data",)) -> dict:
    """An asset whose `eo:bands` give centre / FWHM in micrometres, as STAC's eo extension."""
    bands = []
    for i, wl in enumerate(wavelength_nm):
        band = {"name": names[i] if names else f"b{i + 1}",
                "center_wavelength": float(wl) / 1000.0}
        if fwhm_nm is not None:
            band["full_width_half_max"] = float(fwhm_nm[i]) / 1000.0
        bands.append(band)
    return {"href": href, "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": list(roles), "eo:bands": bands}


def write_stac_catalog(root, items_by_collection: dict[str, list[dict]]) -> Path:
    """catalog.json -> COLLECTION/collection.json -> COLLECTION/ID.json under `root`, linked
    with relative hrefs (a static catalogue); returns the catalog.json path."""
    import json

    root = Path(root)
    links = []
    for collection, items in items_by_collection.items():
        folder = root / collection
        folder.mkdir(parents=True, exist_ok=True)
        for item in items:
            (folder / f"{item['id']}.json").write_text(json.dumps(item))
        (folder / "collection.json").write_text(json.dumps({
            "type": "Collection", "stac_version": "1.0.0", "id": collection,
            "description": collection, "license": "proprietary",
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                       "temporal": {"interval": [[None, None]]}},
            "links": [{"rel": "item", "href": f"./{i['id']}.json"} for i in items]}))
        links.append({"rel": "child", "href": f"./{collection}/collection.json"})
    catalog = root / "catalog.json"
    catalog.write_text(json.dumps({"type": "Catalog", "stac_version": "1.0.0", "id": "test",
                                   "description": "specaware test catalogue", "links": links}))
    return catalog
