"""Remote scenes: `http(s)://` URLs, `s3://` URIs and GDAL virtual paths (`/vsicurl/`,
`/vsis3/`, ...), read window by window through GDAL's network drivers (docs/DATA_IN_THE_CLOUD.md).

    with open_raster("https://host/scene.tif") as src:    # a rasterio dataset
        src.read(1, window=...)                           # ranged GETs of the needed blocks

Only the blocks a window touches are fetched (GDAL issues HTTP range requests; COGs keep their
header first so opening costs one or two requests). Credentials are GDAL's and boto3's usual
ones: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE with
~/.aws/credentials, and AWS_ENDPOINT_URL for S3-compatible stores (MinIO, Ceph...), which is
handed to GDAL as AWS_S3_ENDPOINT. Nothing here logs a credential: every URL that reaches a
message goes through `redact` (user:password and signed-URL query parameters removed).

Transient failures (HTTP 429/5xx, resets, timeouts) are retried by GDAL with exponential
backoff (GDAL_HTTP_MAX_RETRY / GDAL_HTTP_RETRY_DELAY, set from `RetryPolicy`); every retry
GDAL announces is counted in `RETRIES` (per process), which `specaware shard` reports.
403, 404 and exhausted timeouts become `RemoteReadError`: one line naming the URL and the fix.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

SCHEMES = ("http://", "https://", "s3://")
VSI_NETWORK = ("/vsicurl/", "/vsis3/", "/vsigs/", "/vsiaz/", "/vsiadls/", "/vsioss/",
               "/vsiswift/", "/vsihdfs/", "/vsiwebhdfs/")
# query parameters of signed URLs (S3 presigned, Azure SAS, GCS) that are credentials
SECRET_PARAMS = re.compile(r"(?i)^(x-amz-(signature|credential|security-token)|sig|signature|"
                           r"token|access_token|x-goog-(signature|credential)|se|sp|sv|"
                           r"awsaccesskeyid|api[_-]?key|key)$")


class RemoteReadError(OSError):
    """A remote file could not be read; the message names the (redacted) URL and the fix."""


def _env(name: str, default: str) -> float:
    return float(os.environ.get(name, default))


@dataclass(frozen=True)
class RetryPolicy:
    """attempts: retries after the first try; delay: first backoff in seconds (doubled with
    jitter at each retry); timeout: seconds per HTTP request. Defaults from the environment
    (SPECAWARE_HTTP_RETRIES=4, SPECAWARE_HTTP_RETRY_DELAY=0.5, SPECAWARE_HTTP_TIMEOUT=30),
    read when the policy is made, so DataLoader workers see the launcher's settings."""

    attempts: int = field(default_factory=lambda: int(_env("SPECAWARE_HTTP_RETRIES", "4")))
    delay: float = field(default_factory=lambda: _env("SPECAWARE_HTTP_RETRY_DELAY", "0.5"))
    timeout: float = field(default_factory=lambda: _env("SPECAWARE_HTTP_TIMEOUT", "30"))


def is_remote(path) -> bool:
    """True for http(s)/s3 URLs and GDAL network virtual paths (possibly nested in /vsizip/,
    or a NetCDF/HDF5 subdataset name such as NETCDF:"/vsicurl/https://...":var)."""
    text = str(path)
    return text.startswith(SCHEMES) or any(v in text for v in VSI_NETWORK) or \
        any(f'"{s}' in text or f":{s}" in text for s in SCHEMES)


def gdal_path(path) -> str:
    """GDAL filename for `path`: http(s)://x -> /vsicurl/http(s)://x, s3://b/k -> /vsis3/b/k;
    GDAL virtual paths and local paths unchanged."""
    text = str(path)
    if text.startswith(("http://", "https://")):
        return "/vsicurl/" + text
    if text.startswith("s3://"):
        return "/vsis3/" + text[len("s3://"):]
    return text


def redact(text) -> str:
    """`text` with URL credentials removed: user:password@ and signed-URL query values."""
    def clean(match: re.Match) -> str:
        url = urllib.parse.urlsplit(match.group(0))
        netloc = url.netloc.rsplit("@", 1)[-1]
        query = urllib.parse.parse_qsl(url.query, keep_blank_values=True)
        query = [(k, "REDACTED" if SECRET_PARAMS.match(k) else v) for k, v in query]
        return urllib.parse.urlunsplit((url.scheme, netloc, url.path,
                                        urllib.parse.urlencode(query, safe="/:"), url.fragment))
    return re.sub(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+", clean, str(text))


def plain_url(path) -> str:
    """The inverse of `gdal_path`: /vsicurl/http(s)://x -> http(s)://x, /vsis3/b/k -> s3://b/k;
    anything else unchanged."""
    text = str(path)
    if text.startswith("/vsicurl/"):
        return text[len("/vsicurl/"):]
    if text.startswith("/vsis3/"):
        return "s3://" + text[len("/vsis3/"):]
    return text


def display_url(path) -> str:
    """The user-facing URL of `path` (GDAL prefixes removed), redacted."""
    return redact(plain_url(path))


# --------------------------------------------------------------------------- GDAL options

def s3_endpoint_options() -> dict[str, str]:
    """GDAL's S3 settings from AWS_ENDPOINT_URL (the variable boto3 and the AWS CLI read), so
    one variable points both at an S3-compatible store; explicit AWS_S3_ENDPOINT wins."""
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not url or os.environ.get("AWS_S3_ENDPOINT"):
        return {}
    parts = urllib.parse.urlsplit(url if "://" in url else "https://" + url)
    return {"AWS_S3_ENDPOINT": parts.netloc + parts.path.rstrip("/"),
            "AWS_HTTPS": "YES" if parts.scheme == "https" else "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE"}


def gdal_options(policy: RetryPolicy | None = None, remote: bool = True) -> dict[str, str]:
    """GDAL configuration for network reads: no directory listing and no sidecar probing on
    open (one request instead of a listing of a whole bucket folder; so remote scenes are
    single files: COG/GeoTIFF, NetCDF, or a VRT, not ENVI .img + .hdr pairs), retries with
    backoff, a request timeout, merged range requests, and the S3 endpoint from
    AWS_ENDPOINT_URL."""
    policy = policy or RetryPolicy()
    options = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "GDAL_HTTP_MAX_RETRY": str(policy.attempts),
        "GDAL_HTTP_RETRY_DELAY": str(policy.delay),
        "GDAL_HTTP_TIMEOUT": str(int(max(1, policy.timeout))),
        "GDAL_HTTP_CONNECTTIMEOUT": str(int(max(1, min(policy.timeout, 10)))),
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "GDAL_HTTP_MULTIRANGE": "SINGLE_GET",
        "VSI_CACHE": "TRUE",
    }
    options.update(s3_endpoint_options())
    if not remote:  # a local scene (or a VRT of remote bands) may need its folder's listing
        del options["GDAL_DISABLE_READDIR_ON_OPEN"]
    for key in list(options):  # the user's own GDAL settings win
        if key in os.environ:
            options[key] = os.environ[key]
    return options


# --------------------------------------------------------------------------- retry counting

RETRIES: Counter = Counter()  # per process: reason -> retries announced by GDAL
_RETRY_MESSAGE = re.compile(r"(?i)retrying again in")
_lock = threading.Lock()


class _RetryCounter(logging.Handler):
    """Counts GDAL's "HTTP error code: 503 ... Retrying again in 1.0 secs" warnings, which
    rasterio forwards to Python logging."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if _RETRY_MESSAGE.search(message):
            code = re.search(r"(?i)(?:code|status)\D{0,5}(\d{3})", message)
            reason = f"HTTP {code.group(1)}" if code else message.split(" - ")[0][:60]
            with _lock:
                RETRIES[redact(reason)] += 1


_HANDLER = _RetryCounter(level=logging.DEBUG)


def install_retry_counter() -> None:
    """Attach the counter to the loggers rasterio sends GDAL messages to (idempotent)."""
    for name in ("rasterio._env", "rasterio._err", "rasterio._base", "rasterio._io"):
        logger = logging.getLogger(name)
        if _HANDLER not in logger.handlers:
            logger.addHandler(_HANDLER)
            if logger.level == logging.NOTSET or logger.level > logging.WARNING:
                logger.setLevel(logging.WARNING)


def take_retries() -> Counter:
    """The retries counted in this process since the last call (and reset the count)."""
    with _lock:
        out = Counter(RETRIES)
        RETRIES.clear()
    return out


# --------------------------------------------------------------------------- errors

def probe_http(url: str, timeout: float) -> int | None:
    """HTTP status of a one-byte ranged GET of `url` (None when no response came)."""
    request = urllib.request.Request(url, headers={"Range": "bytes=0-0"})
    try:
        from specaware.data.http_auth import urlopen
        with urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return None


def explain(path, message: str, policy: RetryPolicy | None = None) -> RemoteReadError:
    """A RemoteReadError for a failed open/read of remote `path`, from GDAL's `message` (and,
    for http(s), the status of a probe request when GDAL's message carries none)."""
    policy = policy or RetryPolicy()
    url, text = display_url(path), redact(message)
    found = re.search(r"(?i)(?:HTTP (?:response |error )?code|status)\D{0,5}(\d{3})", text)
    status = int(found.group(1)) if found else None
    raw = str(path)[len("/vsicurl/"):] if str(path).startswith("/vsicurl/") else str(path)
    if status is None and raw.startswith(("http://", "https://")):
        status = probe_http(raw, policy.timeout)
    lowered = text.lower()
    if status == 404 or "does not exist" in lowered and status is None and "/vsis3/" in str(path) \
            or "nosuchkey" in lowered or "nosuchbucket" in lowered:
        return RemoteReadError(f"{url}: not found (HTTP 404); check the URL, bucket and key")
    if status in (401, 403) or "accessdenied" in lowered or "invalidaccesskeyid" in lowered \
            or "signaturedoesnotmatch" in lowered or "credentials" in lowered:
        return RemoteReadError(
            f"{url}: access denied (HTTP {status or 403}); set credentials "
            f"(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE for s3://, a signed URL "
            f"or GDAL_HTTP_HEADERS / GDAL_HTTP_BEARER / ~/.netrc for https://), or check that "
            f"they may read this object")
    if "timed out" in lowered or "timeout" in lowered or status in (408, 504):
        return RemoteReadError(
            f"{url}: timed out after {policy.attempts} retries; check the network, or raise "
            f"SPECAWARE_HTTP_TIMEOUT (now {policy.timeout:g} s) / SPECAWARE_HTTP_RETRIES")
    if status is not None and status >= 400:
        return RemoteReadError(f"{url}: HTTP {status} after {policy.attempts} retries "
                               f"({text.splitlines()[0][:200]})")
    if status is None and raw.startswith(("http://", "https://")):
        return RemoteReadError(f"{url}: no response from the server; check the host and port, "
                               f"or raise SPECAWARE_HTTP_TIMEOUT")
    return RemoteReadError(f"{url}: {text.splitlines()[0][:300] if text else 'unreadable'}")


@contextlib.contextmanager
def gdal_env(policy: RetryPolicy | None = None, remote: bool = True):
    """rasterio.Env with `gdal_options` (harmless for local files, and needed by a local VRT
    whose bands are remote)."""
    import rasterio

    install_retry_counter()
    with rasterio.Env(**gdal_options(policy, remote)):
        yield


@contextlib.contextmanager
def open_raster(path, policy: RetryPolicy | None = None):
    """rasterio dataset for a local path, URL or GDAL virtual path, with the network options
    set; remote failures become RemoteReadError (one line naming the URL and the fix)."""
    import rasterio
    from rasterio.errors import RasterioIOError

    from specaware.data import h5_cubes
    if h5_cubes.is_cube_name(path):  # EMIT / PRISMA: band axis first, read with h5py
        with h5_cubes.open_cube(str(path)) as cube:
            yield cube
        return
    from specaware.data.netcdf_rows import in_file_order

    remote = is_remote(path)
    with gdal_env(policy, remote), contextlib.ExitStack() as rows:
        try:
            src = rasterio.open(gdal_path(path))
            # a NetCDF variable without a y axis: file order, not GDAL's bottom-up guess
            src = in_file_order(src, lambda: rasterio.open(gdal_path(path)),
                                display_url(path), rows)
        except RasterioIOError as err:
            if not remote:
                raise
            raise explain(gdal_path(path), str(err), policy) from None
        with src:
            try:
                yield src
            except RasterioIOError as err:
                if not remote:
                    raise
                raise explain(gdal_path(path), str(err), policy) from None


def check_exists(path, policy: RetryPolicy | None = None) -> None:
    """Raise RemoteReadError (or FileNotFoundError for a local path) unless `path` opens."""
    if not is_remote(path):
        if not os.path.exists(str(path)):
            raise FileNotFoundError(f"{path} not found")
        return
    with open_raster(path, policy):
        pass
