"""Tar shards streamed from object storage (docs/DATA_IN_THE_CLOUD.md, "Shards in object
storage"): members parsed as the bytes arrive, read ahead of the decoder by a thread.

    for url, members in read_ahead(urls):     # the next shard's GET starts meanwhile
        for key, ext, offset, size, payload in members or local_members(url): ...

Why a thread: socket reads release the GIL, so while the loader worker decodes one tile into a
batch the reader thread receives the next ones, and the next shard's request is already under
way when the current shard ends. Without it, a worker alternated between waiting for bytes and
decoding them; the sender stalled whenever the socket buffer (a few MiB, under one tile) was
full. Read-ahead is bounded in bytes (`SPECAWARE_SHARD_READAHEAD_MB`, default 64, per shard,
at least one member), so a worker holds at most two shards' worth of that in flight; 0 turns
it off (each shard is then streamed by the consumer itself, one at a time).
"""
from __future__ import annotations

import collections
import os
import tarfile
import threading
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


def stream_members(url: str, policy: RetryPolicy | None = None) -> Iterator[Member]:
    """(key, extension, 0, size, payload) of each regular member of the tar at `url`, read as
    the bytes arrive (same tuples as shard_reader._members, offset into `payload`).

    The stream is opened by webdataset's `gopen` (its URL rewriting and scheme table, with
    object_store's opener registered for s3/http/https). The tar headers are parsed here
    (tarfile's stream mode copies every byte through its own
    buffer, which halved the remote train stream); GNU long names and pax paths are honoured.
    """
    from webdataset.gopen import gopen

    from specaware.data.object_store import register_gopen
    from specaware.data.shard_reader import _CutMember

    register_gopen()  # webdataset's scheme table -> object_store.gopen_store (in this process)
    with gopen(url, policy=policy) as response:
        stream = getattr(response, "_raw_stream", response)  # boto3: its urllib3 response
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


def readahead_bytes() -> int:
    return int(float(os.environ.get("SPECAWARE_SHARD_READAHEAD_MB", "64")) * 2**20)


class ShardReadAhead:
    """The members of the tar at `url` (as `stream_members`), received by a daemon thread up to
    `budget` bytes ahead of the consumer. Iterate once; errors of the read (RemoteReadError,
    a cut response) are raised in the consumer, where the member stream stops."""

    _END = object()

    def __init__(self, url: str, budget: int | None = None, policy: RetryPolicy | None = None):
        self.url, self.budget = url, readahead_bytes() if budget is None else budget
        self._ready: collections.deque = collections.deque()
        self._ahead = 0  # payload bytes received and not yet taken
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._receive, args=(policy,), daemon=True,
                                        name=f"readahead {Path(url).name}")
        self._thread.start()

    @property
    def ahead(self) -> int:
        """Payload bytes received and not yet taken by the consumer."""
        with self._changed:
            return self._ahead

    def _receive(self, policy: RetryPolicy | None) -> None:
        try:
            for member in stream_members(self.url, policy):
                if not self._offer(member, member[3]):
                    return  # closed: leaving the generator closes the response
            self._offer(self._END, 0)
        except BaseException as err:  # noqa: BLE001 - handed over, raised in the consumer
            self._offer(err, 0)

    def _offer(self, item, size: int) -> bool:
        with self._changed:
            while self._ahead >= self.budget and self._ready and not self._closed:
                self._changed.wait()
            if self._closed:
                return False
            self._ready.append((item, size))
            self._ahead += size
            self._changed.notify_all()
            return True

    def __iter__(self) -> Iterator[Member]:
        try:
            while True:
                with self._changed:
                    while not self._ready:
                        self._changed.wait()
                    item, size = self._ready.popleft()
                    self._ahead -= size
                    self._changed.notify_all()
                if item is self._END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop receiving (the thread ends at its next member and closes the response)."""
        with self._changed:
            self._closed = True
            self._ready.clear()
            self._changed.notify_all()


def read_ahead(urls: Iterable[str], budget: int | None = None
               ) -> Iterator[tuple[str, ShardReadAhead | None]]:
    """(url, its ShardReadAhead, or None for a local path or a zero budget) for each url, with
    the next remote shard's read started when the current one is handed out. Shards not consumed when the
    caller stops are closed."""
    from specaware.data.object_store import is_store_url

    budget = readahead_bytes() if budget is None else budget
    opened: list[tuple[str, ShardReadAhead | None]] = []  # at most the next shard
    try:
        for url in urls:
            ahead = is_store_url(url) and budget > 0  # 0: read in the consumer, no thread
            opened.append((url, ShardReadAhead(url, budget) if ahead else None))
            if len(opened) == 2:
                yield opened.pop(0)
        while opened:
            yield opened.pop(0)
    finally:
        for _, reader in opened:
            if reader is not None:
                reader.close()
