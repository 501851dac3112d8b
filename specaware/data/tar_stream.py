"""Tar shards streamed from object storage (docs/DATA_IN_THE_CLOUD.md, "Shards in object
storage"): members parsed as the bytes arrive, the next shard requested ahead of its turn.

    for url, opened in read_ahead(urls):      # the next shard's GET is sent meanwhile
        for key, ext, offset, size, payload in opened or local_members(url): ...

Within a shard the kernel reads ahead: TCP receive buffers (autotuned, up to tcp_rmem's
maximum, 32 MiB here) fill while the worker decodes. Across shards nothing did: each shard's
request went out only when the previous one was finished, an idle round trip per shard (tens of
milliseconds to a real object store). `read_ahead` sends it when the previous shard starts.
A reader thread per shard was tried and dropped: on 2 cores it cost about 2 ms of CPU per
224 x 128 x 128 tile (GIL hand-offs) and streamed no faster than the kernel's buffers.
"""
from __future__ import annotations

import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from specaware.data.remote import RetryPolicy

BLOCK = 512  # tar block size
Member = tuple[str, str, int, int, np.ndarray]  # key, extension, offset, size, payload


def _read_exact(stream, size: int) -> tuple[np.ndarray, int]:
    """(buffer of `size` bytes, bytes actually read) straight from the socket: readinto
    writes into the buffer that becomes the sample's pixels (no intermediate copies; np.empty,
    unlike bytearray, does not zero-fill memory the socket overwrites anyway)."""
    buffer = np.empty(size, dtype=np.uint8)
    view, got = memoryview(buffer), 0
    while got < size:
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return buffer, got


def _pax_path(data: bytes) -> str | None:
    for record in data.decode("utf-8", "surrogateescape").split("\n"):
        _, _, field = record.partition(" ")
        if field.startswith("path="):
            return field[len("path="):]
    return None


def open_shard(url: str, policy: RetryPolicy | None = None):
    """The response of the GET of the shard at `url`, through webdataset's `gopen` (its URL
    rewriting and scheme table, with object_store's opener registered for s3/http/https)."""
    from webdataset.gopen import gopen

    from specaware.data.object_store import register_gopen

    register_gopen()  # webdataset's scheme table -> object_store.gopen_store (in this process)
    return gopen(url, policy=policy)


def _body(response):
    """What to `readinto` the tar from: the http.client response under a boto3 body, whose
    urllib3 layer implements readinto as read() plus a copy (urllib3 2.x): two extra passes
    over every tile and a 7 MB temporary. Bypassed only for an unencoded body (S3 objects are;
    truncation is still caught: the tar parser counts the bytes). urllib's response is already
    an http.client response."""
    raw = getattr(response, "_raw_stream", response)  # boto3 StreamingBody -> urllib3
    inner = getattr(raw, "_fp", None)
    encoding = (getattr(raw, "headers", None) or {}).get("content-encoding", "identity")
    if inner is not None and hasattr(inner, "readinto") and encoding in ("", "identity"):
        return inner
    return raw


def stream_members(url: str, policy: RetryPolicy | None = None, response=None
                   ) -> Iterator[Member]:
    """(key, extension, 0, size, payload) of each regular member of the tar at `url`, read as
    the bytes arrive (same tuples as shard_reader._members, offset into `payload`).

    `response`: the shard's open response (`open_shard`), else it is opened here. The tar
    headers are parsed here (tarfile's stream mode copies every byte through its own
    buffer, which halved the remote train stream); GNU long names and pax paths are honoured.
    """
    from specaware.data.shard_reader import _CutMember

    with response if response is not None else open_shard(url, policy) as response:
        stream = _body(response)
        long_name = None
        while True:
            header, got = _read_exact(stream, BLOCK)
            if got < BLOCK:
                if got:
                    raise EOFError(f"the response ended inside a tar header ({got} bytes)")
                return  # no end-of-archive blocks: read_shard counts missing samples
            if not header.any():
                return  # end-of-archive marker
            info = tarfile.TarInfo.frombuf(header.tobytes(), "utf-8", "surrogateescape")
            name, long_name = long_name or info.name, None
            key, _, ext = Path(name).name.partition(".")
            payload, got = _read_exact(stream, info.size)
            if got != info.size:
                raise _CutMember(key, f"member {name}: {got} of {info.size} bytes arrived; "
                                 f"the response was cut short")
            _read_exact(stream, -info.size % BLOCK)  # padding to the next header
            if info.type == tarfile.GNUTYPE_LONGNAME:
                long_name = payload.tobytes().rstrip(b"\0").decode("utf-8", "surrogateescape")
            elif info.type == tarfile.XHDTYPE:
                long_name = _pax_path(payload.tobytes())
            elif info.isreg():
                yield key, ext.lower(), 0, info.size, payload


class OpenedShard:
    """A remote shard whose GET was sent before its turn (`read_ahead`); iterating it gives its
    members (as `stream_members`). An error of the request is raised when it is iterated, so
    it is counted against this shard like any failure of its stream."""

    def __init__(self, url: str, policy: RetryPolicy | None = None):
        self.url, self.response, self.error = url, None, None
        try:
            self.response = open_shard(url, policy)
        except (OSError, ValueError) as err:  # 404, 403, no response, malformed s3 URI
            self.error = err

    def __iter__(self) -> Iterator[Member]:
        if self.error is not None:
            raise self.error
        yield from stream_members(self.url, response=self.response)

    def close(self) -> None:
        if self.response is not None:
            self.response.close()


def read_ahead(urls: Iterable[str]) -> Iterator[tuple[str, OpenedShard | None]]:
    """(url, its OpenedShard, or None for a local path) for each url; the next remote shard's
    request is sent when the current one is handed out. A next shard not reached when the
    caller stops is closed.

    A local path is handed out as soon as it is drawn, without drawing the next one: `urls`
    may draw weighted shards from the RNG that the views also use (stream._Worker), so
    drawing ahead for local files would change a local run's random stream for no gain."""
    from specaware.data.object_store import is_store_url

    opened: list[tuple[str, OpenedShard | None]] = []  # at most the next shard
    try:
        for url in urls:
            remote = is_store_url(url)
            opened.append((url, OpenedShard(url) if remote else None))
            if not remote:
                while opened:
                    yield opened.pop(0)
            elif len(opened) == 2:
                yield opened.pop(0)
        while opened:
            yield opened.pop(0)
    finally:
        for _, shard in opened:
            if shard is not None:
                shard.close()
