"""Credentials for specaware's own HTTP requests (shard streams, manifests, STAC documents,
the range reads of EMIT / PRISMA cubes), taken from the settings GDAL's /vsicurl/ reads, so
one setting serves both readers (docs/DATA_IN_THE_CLOUD.md, "Credentials for https://").

    with urlopen(urllib.request.Request(url, headers={"Range": "bytes=0-9"}), timeout=30) as r:
        ...

Headers, in this order (a later source does not replace a header an earlier one set):
- `GDAL_HTTP_HEADER_FILE`: a file of `Name: value` lines;
- `GDAL_HTTP_HEADERS`: `Name: value` pairs separated by CR LF, else by commas outside double
  quotes (GDAL's two forms);
- `GDAL_HTTP_AUTH=BEARER` with `GDAL_HTTP_BEARER`: `Authorization: Bearer <token>`;
- `GDAL_HTTP_USERPWD` (`user:password`; `GDAL_HTTP_AUTH` unset, BASIC or ANY): basic auth;
- the netrc entry of the URL's host (`GDAL_HTTP_NETRC_FILE`, else ~/.netrc; off with
  `GDAL_HTTP_NETRC=NO`): basic auth.

Redirects: an `Authorization` header is never carried to another host (a data server that
redirects to a pre-signed object-store URL would otherwise send both, which the store refuses,
and would hand the token to a third party); the new host gets its own netrc entry instead, and
cookies set along the way (an Earthdata-style login redirect) come back within the process.
Nothing here is logged.
"""
from __future__ import annotations

import base64
import http.cookiejar
import logging
import netrc
import os
import re
import urllib.parse
import urllib.request
from pathlib import Path

AUTH = "Authorization"
log = logging.getLogger(__name__)
_WARNED: set[str] = set()
_OPENERS: dict[int, urllib.request.OpenerDirector] = {}   # per process: cookies stay in it


def _split_headers(text: str) -> list[str]:
    if "\r\n" in text:
        return text.split("\r\n")
    return [part.strip() for part in re.findall(r'(?:[^,"]|"[^"]*")+', text)]


def _pairs(lines: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for line in lines:
        name, sep, value = line.partition(":")
        if sep and name.strip():
            pairs.append((name.strip(), value.strip().strip('"')))
    return pairs


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def netrc_auth(host: str | None) -> str | None:
    """Basic auth from the netrc entry of `host`, or None (no file, no entry, or disabled)."""
    if not host or os.environ.get("GDAL_HTTP_NETRC", "YES").upper() in ("NO", "FALSE", "OFF", "0"):
        return None
    path = Path(os.environ.get("GDAL_HTTP_NETRC_FILE") or Path.home() / ".netrc")
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except OSError:
        return None                      # no netrc file: nothing to send
    except netrc.NetrcParseError as err:
        if str(path) not in _WARNED:     # a broken file is named once, never its contents
            _WARNED.add(str(path))
            log.warning("%s: not a valid netrc file (line %s); its credentials are not used",
                        path, err.lineno)
        return None
    return _basic(entry[0], entry[2]) if entry else None


def configured_headers(url: str) -> dict[str, str]:
    """The headers the settings above give a request for `url`."""
    env = os.environ
    lines: list[str] = []
    if env.get("GDAL_HTTP_HEADER_FILE"):
        try:
            lines += Path(env["GDAL_HTTP_HEADER_FILE"]).read_text().splitlines()
        except OSError as err:
            if env["GDAL_HTTP_HEADER_FILE"] not in _WARNED:
                _WARNED.add(env["GDAL_HTTP_HEADER_FILE"])
                log.warning("GDAL_HTTP_HEADER_FILE %s cannot be read (%s); its headers are not "
                            "sent", env["GDAL_HTTP_HEADER_FILE"], err.strerror or err)
    if env.get("GDAL_HTTP_HEADERS"):
        lines += _split_headers(env["GDAL_HTTP_HEADERS"])
    headers: dict[str, str] = {}
    for name, value in _pairs(lines):
        headers.setdefault(name, value)
    auth = env.get("GDAL_HTTP_AUTH", "").upper()
    if AUTH not in headers and auth == "BEARER" and env.get("GDAL_HTTP_BEARER"):
        headers[AUTH] = f"Bearer {env['GDAL_HTTP_BEARER']}"
    if AUTH not in headers and env.get("GDAL_HTTP_USERPWD") and auth in ("", "BASIC", "ANY"):
        user, _, password = env["GDAL_HTTP_USERPWD"].partition(":")
        headers[AUTH] = _basic(user, password)
    if AUTH not in headers:
        found = netrc_auth(urllib.parse.urlsplit(url).hostname)
        if found:
            headers[AUTH] = found
    return headers


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects without carrying Authorization to another host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is None:
            return None
        old_host = urllib.parse.urlsplit(req.full_url).netloc.lower()
        new_host = urllib.parse.urlsplit(new.full_url)
        if new_host.netloc.lower() != old_host:
            for name in list(new.headers):
                if name.lower() == AUTH.lower():
                    del new.headers[name]
            own = netrc_auth(new_host.hostname)
            if own:
                new.add_header(AUTH, own)
        return new


def _opener() -> urllib.request.OpenerDirector:
    pid = os.getpid()   # a DataLoader worker gets its own cookie jar
    if pid not in _OPENERS:
        _OPENERS[pid] = urllib.request.build_opener(
            _Redirects, urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    return _OPENERS[pid]


def urlopen(request, timeout: float):
    """`urllib.request.urlopen(request, timeout)` with the configured credentials (headers
    the request already has win) and the redirect rules above."""
    if isinstance(request, str):
        request = urllib.request.Request(request)
    for name, value in configured_headers(request.full_url).items():
        if not request.has_header(name.capitalize()):
            request.add_header(name, value)
    return _opener().open(request, timeout=timeout)
