"""Shard sets in object storage: `s3://bucket/prefix/` or `https://host/prefix/` holding
`manifest.json` and the tars (docs/DATA_IN_THE_CLOUD.md).

Reading: `resolve_prefix` fetches the manifest (in the process that builds the loader); each
DataLoader worker then streams only the shards of its own partition (stream.py decides which),
one HTTP GET / S3 GetObject per shard, opened through webdataset's `gopen` scheme table with
this module's opener registered for s3/http/https (`register_gopen`), parsed member by member as the bytes arrive
(tar_stream.py), so no shard is stored on local disk. Transient failures (HTTP 429/5xx,
resets, timeouts) are retried with exponential backoff and counted in `remote.RETRIES`; 404
and 403 fail at once with the URL named (redacted). A stream that breaks mid-shard ends the
shard: the loader counts its lost samples as a truncated shard (shard_reader.read_shard).

Writing (`specaware shard --out s3://...`): `RemoteShardWriter` writes each shard to a local
staging folder, uploads it as soon as it is complete (in a background thread, one at a time)
and deletes the local copy; manifest.json is uploaded last, after every shard upload finished,
so a reader never sees a manifest whose shards are not all there. S3 only: plain HTTP has no
standard upload. Credentials: boto3's usual chain (AWS_* variables, AWS_PROFILE, instance
roles); AWS_ENDPOINT_URL points at S3-compatible stores.
"""
from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import random
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO, Callable

from specaware.data import http_auth
from specaware.data.remote import RETRIES, RemoteReadError, RetryPolicy, redact

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"  # = shard.MANIFEST (not imported: shard.py imports this module)
TRANSIENT_HTTP = {408, 429, 500, 502, 503, 504}


def is_store_url(source) -> bool:
    """True for an s3:// or http(s):// location (a prefix, a tar or a brace pattern)."""
    return isinstance(source, str) and source.startswith(("s3://", "http://", "https://"))


def join(prefix: str, name: str) -> str:
    return prefix.rstrip("/") + "/" + name


def split_s3(url: str) -> tuple[str, str]:
    bucket, _, key = url[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"{url}: an s3 URI needs a bucket, e.g. s3://bucket/shards/")
    return bucket, key


# --------------------------------------------------------------------------- clients

_S3_CLIENTS: dict[tuple, Any] = {}


def s3_client(policy: RetryPolicy | None = None):
    """One boto3 client per process and settings (workers are separate processes). botocore's
    own retries are off: `with_retries` retries and counts them."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    ident = (os.getpid(), endpoint, os.environ.get("AWS_ACCESS_KEY_ID"),
             os.environ.get("AWS_PROFILE"))
    if ident not in _S3_CLIENTS:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise RemoteReadError("s3:// needs boto3: pip install 'specaware[cloud]'") from None
        policy = policy or RetryPolicy()
        config = Config(retries={"max_attempts": 1, "mode": "standard"},
                        connect_timeout=min(policy.timeout, 10), read_timeout=policy.timeout)
        # a fresh session: boto3's default one keeps the first credentials it resolved
        _S3_CLIENTS[ident] = boto3.session.Session().client(
            "s3", endpoint_url=endpoint or None, config=config)
    return _S3_CLIENTS[ident]


def _s3_error(url: str, err: Exception) -> tuple[RemoteReadError, bool]:
    """(error naming `url`, transient?) for a botocore exception."""
    from botocore.exceptions import (BotoCoreError, ClientError, NoCredentialsError,
                                     PartialCredentialsError)

    if isinstance(err, (NoCredentialsError, PartialCredentialsError)):
        return RemoteReadError(
            f"{url}: no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            f"(or AWS_PROFILE with ~/.aws/credentials)"), False
    if isinstance(err, ClientError):
        code = str(err.response.get("Error", {}).get("Code", ""))
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchKey", "NoSuchBucket", "404", "NotFound") or status == 404:
            return RemoteReadError(f"{url}: not found (HTTP 404, {code}); check the bucket "
                                   f"and prefix"), False
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                    "ExpiredToken") or status == 403:
            return RemoteReadError(
                f"{url}: access denied (HTTP 403, {code}); check AWS_ACCESS_KEY_ID / "
                f"AWS_SECRET_ACCESS_KEY / AWS_PROFILE and the bucket policy"), False
        return RemoteReadError(f"{url}: S3 error {code} (HTTP {status})"), \
            status in TRANSIENT_HTTP or code in ("SlowDown", "InternalError", "RequestTimeout")
    if isinstance(err, BotoCoreError):  # connection errors, read timeouts
        return RemoteReadError(f"{url}: {type(err).__name__}: {redact(err)}"), True
    return RemoteReadError(f"{url}: {type(err).__name__}: {redact(err)}"), False


def _http_error(url: str, err: Exception) -> tuple[RemoteReadError, bool]:
    if isinstance(err, urllib.error.HTTPError):
        if err.code == 404:
            return RemoteReadError(f"{url}: not found (HTTP 404); check the URL"), False
        if err.code in (401, 403):
            return RemoteReadError(f"{url}: access denied (HTTP {err.code}); use a signed URL, "
                                   f"credentials in GDAL_HTTP_HEADERS / GDAL_HTTP_BEARER / "
                                   f"~/.netrc, or an s3:// URI with AWS credentials"), False
        return RemoteReadError(f"{url}: HTTP {err.code}"), err.code in TRANSIENT_HTTP
    return RemoteReadError(f"{url}: no response ({redact(getattr(err, 'reason', err))}); "
                           f"check the host, or raise SPECAWARE_HTTP_TIMEOUT"), True


def with_retries(url: str, action: Callable[[], Any], policy: RetryPolicy | None = None):
    """`action()`, retried on transient errors with exponential backoff and jitter; each retry
    is counted in remote.RETRIES. Raises RemoteReadError naming the redacted `url`."""
    policy = policy or RetryPolicy()
    shown = redact(url)
    for attempt in range(policy.attempts + 1):
        try:
            return action()
        except RemoteReadError:
            raise
        except Exception as err:  # noqa: BLE001 - classified below, re-raised when permanent
            error, transient = (_s3_error if url.startswith("s3://") else _http_error)(shown, err)
            if not transient or attempt == policy.attempts:
                if transient:
                    error = RemoteReadError(f"{error} (after {policy.attempts} retries)")
                raise error from None
            delay = policy.delay * 2 ** attempt * random.uniform(0.8, 1.2)
            RETRIES[f"{type(err).__name__}"] += 1
            log.warning("%s; retry %d of %d in %.1f s", error, attempt + 1, policy.attempts,
                        delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- reading

def open_stream(url: str, policy: RetryPolicy | None = None) -> BinaryIO:
    """A readable binary stream of the object at `url` (http(s):// or s3://)."""
    policy = policy or RetryPolicy()
    if url.startswith("s3://"):
        bucket, key = split_s3(url)
        return with_retries(url, lambda: s3_client(policy).get_object(Bucket=bucket, Key=key)
                            ["Body"], policy)
    return with_retries(url, lambda: http_auth.urlopen(url, timeout=policy.timeout), policy)


GOPEN_SCHEMES = ("s3", "http", "https")


def gopen_store(url: str, mode: str = "rb", bufsize: int = 8192,
                policy: RetryPolicy | None = None, **_) -> BinaryIO:
    """webdataset `gopen` handler for s3:// and http(s):// (`register_gopen`): open_stream,
    so a 404/403 is one RemoteReadError line naming the URL and transient errors are retried
    and counted. webdataset's own http(s) handler pipes `curl -f` and reports a 404 only as
    curl's exit status 22 (a `ReadError('empty file', ...)` in a WebDataset pipeline), and it
    has no s3 handler at all. `bufsize` is webdataset's pipe buffer, unused here."""
    if not mode.startswith("r"):
        raise ValueError(f"{redact(url)}: specaware opens shards for reading only; write a "
                         f"shard set with `specaware shard ... --out s3://BUCKET/PREFIX/`")
    return open_stream(url, policy)


def register_gopen() -> None:
    """Make webdataset's scheme table (`webdataset.gopen.gopen_schemes`) open s3:// and
    http(s):// with `gopen_store`. The loader calls it in the process that streams (DataLoader
    workers, or the main process with num_workers=0); other `wds.WebDataset` pipelines in that
    process then get the same opener instead of webdataset's curl pipe."""
    from webdataset.gopen import gopen_schemes  # (webdataset.gopen is also a function)

    for scheme in GOPEN_SCHEMES:
        gopen_schemes[scheme] = gopen_store


def read_bytes(url: str, policy: RetryPolicy | None = None) -> bytes:
    with open_stream(url, policy) as stream:
        return stream.read()


def object_size(url: str, policy: RetryPolicy | None = None) -> int:
    """Bytes of the object at `url` (one HEAD / HeadObject)."""
    policy = policy or RetryPolicy()
    if url.startswith("s3://"):
        bucket, key = split_s3(url)
        head = with_retries(url, lambda: s3_client(policy).head_object(Bucket=bucket, Key=key),
                            policy)
        return int(head["ContentLength"])
    request = urllib.request.Request(url, method="HEAD")

    def head() -> int:
        with http_auth.urlopen(request, timeout=policy.timeout) as response:
            return int(response.headers["Content-Length"])
    return with_retries(url, head, policy)


def read_range(url: str, start: int, count: int, policy: RetryPolicy | None = None) -> bytes:
    """Bytes [start, start + count) of the object at `url` (a ranged GET)."""
    policy = policy or RetryPolicy()
    span = f"bytes={start}-{start + count - 1}"
    if url.startswith("s3://"):
        bucket, key = split_s3(url)
        return with_retries(url, lambda: s3_client(policy).get_object(
            Bucket=bucket, Key=key, Range=span)["Body"].read(), policy)
    request = urllib.request.Request(url, headers={"Range": span})

    def get() -> bytes:
        with http_auth.urlopen(request, timeout=policy.timeout) as response:
            if response.status == 200:  # the server ignored the range: cut it here
                return response.read(start + count)[start:]
            return response.read()
    return with_retries(url, get, policy)


def exists(url: str, policy: RetryPolicy | None = None) -> bool:
    """True when the object is there; RemoteReadError for denied access or no response."""
    policy = policy or RetryPolicy()
    try:
        if url.startswith("s3://"):
            bucket, key = split_s3(url)
            with_retries(url, lambda: s3_client(policy).head_object(Bucket=bucket, Key=key),
                         policy)
        else:
            request = urllib.request.Request(url, method="HEAD")
            with_retries(url, lambda: http_auth.urlopen(request, timeout=policy.timeout)
                         .close(), policy)
    except RemoteReadError as err:
        if "(HTTP 404" in str(err):
            return False
        raise
    return True


def missing(urls: list[str], policy: RetryPolicy | None = None) -> list[str]:
    """The urls that do not exist (checked concurrently, 16 at a time)."""
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        found = list(pool.map(lambda u: exists(u, policy), urls))
    return [u for u, ok in zip(urls, found) if not ok]


def read_manifest(prefix: str) -> dict[str, Any]:
    """manifest.json of a remote shard set, with a clear error when it is not there."""
    from specaware.data.shard import MANIFEST_FORMAT

    url = join(prefix, MANIFEST)
    try:
        manifest = json.loads(read_bytes(url))
    except RemoteReadError as err:
        if "(HTTP 404" in str(err):
            how = (f"write one with `specaware shard SCENE... --out {redact(prefix)}`"
                   if prefix.startswith("s3://") else "write one with `specaware shard "
                   "SCENE... --out DIR` and publish DIR there, or use an s3:// --out")
            raise FileNotFoundError(f"{redact(url)} not found: {redact(prefix)} is not a "
                                    f"finished shard set ({how})") from None
        raise
    except json.JSONDecodeError as err:
        raise ValueError(f"{redact(url)}: not JSON ({err}); truncated upload?") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{redact(url)}: format {manifest.get('format')!r}, expected "
                         f"{MANIFEST_FORMAT!r}")
    return manifest


def resolve_prefix(prefix: str) -> tuple[list[str], dict[str, int]]:
    """(shard urls, expected samples per shard name) of the shard set under `prefix`."""
    manifest = read_manifest(prefix)
    counts = {s["name"]: int(s["count"]) for s in manifest["shards"]}
    return [join(prefix, s["name"]) for s in manifest["shards"]], counts


# --------------------------------------------------------------------------- writing

class RemoteShardWriter:
    """ShardWriter whose finished shards go to s3://bucket/prefix/ (see the module docstring).

    Same interface as shard.ShardWriter (add, close, manifest, context manager).
    """

    def __init__(self, out_url: str, shard_size: int = 256, overwrite: bool = False,
                 info: dict[str, Any] | None = None):
        from specaware.data.shard import ShardWriter

        if not out_url.startswith("s3://"):
            raise ValueError(f"--out {redact(out_url)}: shards can be uploaded to s3:// only "
                             f"(plain HTTP has no standard upload); write locally and copy")
        self.url, self.bucket, self.prefix = out_url, *split_s3(out_url.rstrip("/") + "/")
        self._prepare(overwrite)
        self.staging = Path(tempfile.mkdtemp(prefix="specaware-upload-"))
        self._local = ShardWriter(self.staging, shard_size=shard_size, info=info)
        self._local._finish_shard = self._finish_and_upload  # upload each shard as it closes
        self._pool = concurrent.futures.ThreadPoolExecutor(1)
        self._uploads: list[concurrent.futures.Future] = []

    @property
    def info(self) -> dict[str, Any]:
        return self._local.info

    @property
    def manifest(self) -> dict[str, Any] | None:
        return self._local.manifest

    def _prepare(self, overwrite: bool) -> None:
        client = s3_client()
        listing = with_retries(self.url, lambda: client.list_objects_v2(
            Bucket=self.bucket, Prefix=self.prefix))
        old = [o["Key"] for o in listing.get("Contents", [])
               if o["Key"][len(self.prefix):].startswith("shard-")
               or o["Key"][len(self.prefix):] == MANIFEST]
        if old and not overwrite:
            from specaware.data.shard import ShardSetExistsError
            raise ShardSetExistsError(
                f"{redact(self.url)} already holds a shard set ({len(old)} objects, e.g. "
                f"{old[0]}); pass --overwrite to replace it, or choose another --out")
        for key in sorted(old, key=lambda k: not k.endswith(MANIFEST)):  # manifest first
            with_retries(self.url, lambda k=key: client.delete_object(Bucket=self.bucket, Key=k))

    def _upload(self, path: Path) -> None:
        key = self.prefix + path.name
        with_retries(self.url, lambda: s3_client().upload_file(str(path), self.bucket, key))
        path.unlink()

    def _finish_and_upload(self) -> None:
        from specaware.data.shard import ShardWriter

        pending = self._local._tar is not None
        ShardWriter._finish_shard(self._local)
        if pending:
            name = self._local.shards[-1]["name"]
            self._uploads.append(self._pool.submit(self._upload, self.staging / name))

    def add(self, key: str, members: dict[str, bytes], row: dict[str, Any] | None = None):
        if self._uploads and self._uploads[-1].done():
            self._uploads.pop().result()  # an upload error stops the run early
        self._local.add(key, members, row)

    def close(self) -> dict[str, Any]:
        try:
            manifest = self._local.close()
            for future in self._uploads:
                future.result()
            self._upload(self.staging / MANIFEST)  # last: the set is complete only now
            return manifest
        finally:
            self._pool.shutdown(wait=True)
            shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> "RemoteShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        self._local._abort()
        self._pool.shutdown(wait=True)
        shutil.rmtree(self.staging, ignore_errors=True)
