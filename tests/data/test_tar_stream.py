"""Remote tar shards are received ahead of the decoder (tar_stream.py): the next shard's GET
starts while the current one is consumed, read-ahead stops at its byte budget, closing ends the
reader thread, and a failed GET is raised in the consumer naming the URL. Loopback server."""
import io
import tarfile
import time

import pytest

from specaware.data.remote import RemoteReadError
from specaware.data.tar_stream import ShardReadAhead, read_ahead
from specaware.testing_remote import http_server

pytestmark = pytest.mark.timeout(60)
MEMBER = 65536


@pytest.fixture(autouse=True)
def _fast_network(monkeypatch):
    monkeypatch.setenv("SPECAWARE_HTTP_RETRY_DELAY", "0.05")
    monkeypatch.setenv("SPECAWARE_HTTP_TIMEOUT", "5")


def _write_tar(path, members: int) -> list[tuple[str, bytes]]:
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


def test_read_ahead_stops_at_its_budget_and_close_ends_the_thread(tmp_path):
    _write_tar(tmp_path / "big.tar", 40)  # 2.5 MiB, more than the socket buffers hold
    with http_server(tmp_path) as server:
        reader = ShardReadAhead(server.url("big.tar"), budget=2 * MEMBER)
        assert _wait_for(lambda: reader.ahead >= 2 * MEMBER)
        time.sleep(0.3)  # room for a reader that ignored the budget to run ahead
        assert reader.ahead == 2 * MEMBER
        members = iter(reader)
        key = next(members)[0]
        assert key == "k000"
        members.close()  # the consumer stops early
        reader._thread.join(5)
        assert not reader._thread.is_alive()


def test_a_missing_shard_is_raised_in_the_consumer_naming_the_url(tmp_path):
    with http_server(tmp_path) as server:
        (url, reader), = list(read_ahead([server.url("gone.tar")]))
        with pytest.raises(RemoteReadError, match=r"^http://127\.0\.0\.1:\d+/gone\.tar: not "
                                                  r"found \(HTTP 404\); check the URL$"):
            list(reader)


def test_local_paths_are_handed_through_unopened(tmp_path):
    assert list(read_ahead([str(tmp_path / "x.tar")])) == [(str(tmp_path / "x.tar"), None)]
