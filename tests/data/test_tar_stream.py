"""Remote tar shards (tar_stream.py): the next shard's GET starts while the current one is
consumed, a failed GET is raised in the consumer naming the URL; streams are opened through
webdataset's gopen with specaware's opener (one-line 404, URL rewriting). Loopback server."""
import io
import tarfile
import time

import pytest

from specaware.data.remote import RemoteReadError
from specaware.data.tar_stream import read_ahead
from specaware.testing_remote import http_server

pytestmark = pytest.mark.timeout(60)
MEMBER = 65536


@pytest.fixture(autouse=True)
def _fast_network(monkeypatch):
    monkeypatch.setenv("SPECAWARE_HTTP_RETRY_DELAY", "0.05")
    monkeypatch.setenv("SPECAWARE_HTTP_TIMEOUT", "5")


def _write_tar(path, members: int) -> list[tuple[str, bytes]]:
    """A tar of `members` 64 KiB members k000.npy, k001.npy, ...; returns (key, bytes)."""
    want = []
    with tarfile.open(path, "w") as tar:
        for i in range(members):
            data = bytes([i % 256]) * MEMBER
            entry = tarfile.TarInfo(f"k{i:03d}.npy")
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))
            want.append((f"k{i:03d}", data))
    return want


def _wait_for(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_next_shard_request_starts_before_the_current_one_is_consumed(tmp_path):
    first, second = _write_tar(tmp_path / "a.tar", 3), _write_tar(tmp_path / "b.tar", 2)
    with http_server(tmp_path) as server:
        shards = read_ahead([server.url("a.tar"), server.url("b.tar")])
        url, reader = next(shards)
        assert url.endswith("a.tar") and reader is not None
        assert _wait_for(lambda: server.gets["/b.tar"] == 1)  # before a.tar was read at all
        got = [[(k, p.tobytes()) for k, _, _, _, p in reader]]
        url, reader = next(shards)
        got.append([(k, p.tobytes()) for k, _, _, _, p in reader])
        assert next(shards, None) is None
    assert got == [first, second] and url.endswith("b.tar")
    assert dict(server.gets) == {"/a.tar": 1, "/b.tar": 1}


def test_a_missing_shard_is_raised_in_the_consumer_naming_the_url(tmp_path):
    with http_server(tmp_path) as server:
        (url, reader), = list(read_ahead([server.url("gone.tar")]))
        with pytest.raises(RemoteReadError, match=r"^http://127\.0\.0\.1:\d+/gone\.tar: not "
                                                  r"found \(HTTP 404\); check the URL$"):
            list(reader)


def test_local_paths_are_handed_through_unopened(tmp_path):
    assert list(read_ahead([str(tmp_path / "x.tar")])) == [(str(tmp_path / "x.tar"), None)]


def test_local_paths_are_not_drawn_ahead(tmp_path):
    """The url source may draw weighted shards from the RNG the views share: for local files
    the next url is drawn only when the consumer asks for it, so a local run's random stream
    is what it was before remote read-ahead existed."""
    drawn = []

    def urls():
        for i in range(3):
            drawn.append(i)
            yield str(tmp_path / f"{i}.tar")

    shards = read_ahead(urls())
    assert next(shards)[0].endswith("0.tar") and drawn == [0]
    assert next(shards)[0].endswith("1.tar") and drawn == [0, 1]


def test_webdataset_gopen_opens_store_urls_and_says_404_in_one_line(tmp_path):
    from webdataset.gopen import gopen, gopen_schemes

    from specaware.data.object_store import gopen_store, register_gopen

    register_gopen()
    assert all(gopen_schemes[s] is gopen_store for s in ("s3", "http", "https"))
    with http_server(tmp_path) as server:
        url = server.url("missing.tar")
        with pytest.raises(RemoteReadError) as caught:
            gopen(url)
    # webdataset's own curl pipe says "exit 22 (read)", or ReadError('empty file') in a pipeline
    assert str(caught.value) == f"{url}: not found (HTTP 404); check the URL"


def test_loader_streams_go_through_webdataset_url_rewriting(tmp_path, monkeypatch):
    from specaware.data.tar_stream import stream_members

    want = _write_tar(tmp_path / "real.tar", 2)
    with http_server(tmp_path) as server:
        monkeypatch.setenv("GOPEN_REWRITE", f"{server.url('mirror/')}={server.url('')}")
        got = [(k, p.tobytes()) for k, _, _, _, p in stream_members(server.url("mirror/real.tar"))]
    assert got == want and dict(server.gets) == {"/real.tar": 1}


def test_a_shard_gone_since_the_manifest_is_a_counted_skip_naming_its_url(tmp_path):
    from specaware.data.stream import make_loader
    from specaware.testing import write_tiny_shards

    write_tiny_shards(tmp_path / "set", num_shards=2, per_shard=2)
    with http_server(tmp_path) as server:
        loader = make_loader(server.url("set/"), mode="eval", batch_size=2, num_workers=0,
                             max_skip_rate=1.0)
        # a manifest set is not HEAD-checked shard by shard at every loader build
        assert not [p for p in server.requests if p.endswith(".tar")]
        (tmp_path / "set" / "shard-000001.tar").unlink()
        tiles = sum(len(batch["meta"]) for batch in loader)
    assert tiles == 2 and loader.stats.skipped == {"truncated or unreadable shard": 2}
    example = loader.stats.examples[0]
    assert f"{server.url('set/shard-000001.tar')}: not found (HTTP 404)" in example


def test_s3_bodies_are_read_below_urllib3_unless_encoded():
    import http.client

    from specaware.data.tar_stream import _body

    class Urllib3Like:  # urllib3 2.x: readinto = read() + a copy
        def __init__(self, encoding):
            self._fp = http.client.HTTPResponse.__new__(http.client.HTTPResponse)
            self.headers = {"content-encoding": encoding} if encoding else {}

    class StreamingBodyLike:
        def __init__(self, encoding):
            self._raw_stream = Urllib3Like(encoding)

    plain, gzipped = StreamingBodyLike(None), StreamingBodyLike("gzip")
    assert _body(plain) is plain._raw_stream._fp
    assert _body(gzipped) is gzipped._raw_stream  # urllib3 must decode it
