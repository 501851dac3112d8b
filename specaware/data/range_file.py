"""A read-only, seekable file over HTTP range requests or S3 ranged GETs, for libraries that
read a container by seeking inside it (h5py for EMIT / PRISMA cubes, data/h5_cubes.py); see
docs/DATA_IN_THE_CLOUD.md, "EMIT and PRISMA".

    with open_remote_file("https://host/EMIT_L2A_RFL.nc") as f:   # io.BufferedReader
        h5 = h5py.File(f, "r")

Each read the buffer cannot serve is one ranged request (object_store.read_range: retried
with backoff and counted, a 404/403 is one line naming the URL). The buffer (1 MiB) turns
h5py's many small metadata reads into a few requests; pixel reads fetch the chunks they need.
"""
from __future__ import annotations

import io

from specaware.data import object_store
from specaware.data.remote import RetryPolicy, plain_url

BUFFER = 2**20


def store_url(path: str) -> str | None:
    """The http(s):// or s3:// URL of `path` (GDAL's /vsicurl/ and /vsis3/ forms too), else
    None for a local path."""
    url = plain_url(path)
    return url if object_store.is_store_url(url) else None


class RangeFile(io.RawIOBase):
    """The object at `url` as a raw binary file: its size from one HEAD, bytes by range."""

    def __init__(self, url: str, policy: RetryPolicy | None = None):
        super().__init__()
        self.url, self.policy, self.position = url, policy or RetryPolicy(), 0
        self.size = object_store.object_size(url, self.policy)
        self.requests = 0  # ranged GETs made

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError(f"{self.url}: seek to {base + offset}, before the start")
        self.position = base + offset
        return self.position

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self.size - self.position)
        if count <= 0:
            return 0
        data = object_store.read_range(self.url, self.position, count, self.policy)
        self.requests += 1
        memoryview(buffer)[:len(data)] = data
        self.position += len(data)
        return len(data)


def open_remote_file(url: str, policy: RetryPolicy | None = None) -> io.BufferedReader:
    return io.BufferedReader(RangeFile(url, policy), buffer_size=BUFFER)
