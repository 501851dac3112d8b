"""Shard sets in object storage: `specaware shard --out s3://` uploads shards as they finish and
the manifest last; the streaming loader reads s3:// and https:// prefixes with each worker
opening only its own shards; 404, truncated responses and missing credentials are handled
(clear errors up front, counted skips mid-stream). Servers run on loopback and are stopped."""
import numpy as np
import pytest

from specaware.config import ConfigError
from specaware.data.object_store import RemoteShardWriter
from specaware.data.remote import RemoteReadError
from specaware.data.shard import ShardSetExistsError, read_manifest, shard_scenes
from specaware.data.shard_reader import require_shard_files
from specaware.data.stream import make_loader
from specaware.data.tiling import TilingOptions
from specaware.testing import sensor_bands, synthetic_cube, write_geotiff, write_tiny_shards
from specaware.testing_remote import http_server

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(autouse=True)
def _fast_network(monkeypatch):
    monkeypatch.setenv("SPECAWARE_HTTP_RETRY_DELAY", "0.05")
    monkeypatch.setenv("SPECAWARE_HTTP_TIMEOUT", "5")


def _keys_and_pixels(source, workers=0):
    loader = make_loader(source, mode="eval", batch_size=4, num_workers=workers)
    out = {}
    for batch in loader:
        for i, meta in enumerate(batch["meta"]):
            out[meta["key"]] = batch["image"][i].numpy().copy()
    return out, loader.stats


def test_https_prefix_streams_the_same_samples_each_shard_opened_once(tmp_path):
    write_tiny_shards(tmp_path / "set", num_shards=4, per_shard=3)
    local, _ = _keys_and_pixels(tmp_path / "set")
    with http_server(tmp_path) as server:
        remote, stats = _keys_and_pixels(server.url("set/"), workers=2)
        requests = dict(server.gets)
    assert sorted(remote) == sorted(local) and len(local) == 12
    for key in local:
        np.testing.assert_array_equal(remote[key], local[key])
    shard_requests = {k: v for k, v in requests.items() if k.endswith(".tar")}
    assert shard_requests == {f"/set/shard-{i:06d}.tar": 1 for i in range(4)}
    assert stats.total_skipped == 0


def test_missing_remote_shard_is_a_config_error_naming_it(tmp_path):
    write_tiny_shards(tmp_path / "set", num_shards=2, per_shard=2)
    (tmp_path / "set" / "shard-000001.tar").unlink()
    with http_server(tmp_path) as server:
        with pytest.raises(ConfigError, match=r"1 of 2 shard\(s\) not found.*shard-000001"):
            require_shard_files("data.shards", server.url("set/"))
        with pytest.raises(FileNotFoundError, match=r"manifest.json not found.*publish DIR"):
            read_manifest(server.url("nothing/"))


def test_truncated_response_counts_the_lost_samples(tmp_path):
    write_tiny_shards(tmp_path / "set", num_shards=2, per_shard=4)
    with http_server(tmp_path) as server:
        server.faults["/set/shard-000001.tar"] = "truncate"
        loader = make_loader(server.url("set/"), mode="eval", batch_size=2, num_workers=0,
                             max_skip_rate=1.0)
        seen = sum(len(b["meta"]) for b in loader)
    assert seen < 8
    assert loader.stats.total_skipped == 8 - seen
    assert set(loader.stats.shards) == {"shard-000001.tar"}


def _scene(tmp_path):
    wl, fwhm, _ = sensor_bands("enmap", 10)
    cube = np.clip(synthetic_cube(wl, 32, 32, seed=1), 0.001, None)
    return write_geotiff(tmp_path / "scene.tif", cube, wavelength=wl, fwhm=fwhm)


def test_shard_to_s3_uploads_then_streams_back_identically(tmp_path):
    pytest.importorskip("moto")
    from specaware.testing_remote import s3_client, s3_server

    scene = _scene(tmp_path)
    with s3_server():
        s3_client().create_bucket(Bucket="train")
        manifest = shard_scenes([scene], "s3://train/sets/a/", shard_size=2,
                                options=TilingOptions(tile=16), progress=False)
        keys = sorted(o["Key"] for o in s3_client().list_objects_v2(Bucket="train")["Contents"])
        assert keys == ["sets/a/manifest.json", "sets/a/shard-000000.tar",
                        "sets/a/shard-000001.tar"]
        assert read_manifest("s3://train/sets/a")["total"] == manifest["total"] == 4
        remote, _ = _keys_and_pixels("s3://train/sets/a/", workers=2)
        with pytest.raises(ShardSetExistsError, match=r"s3://train/sets/a/ already holds"):
            shard_scenes([scene], "s3://train/sets/a/", progress=False)
    shard_scenes([scene], tmp_path / "local", shard_size=2, options=TilingOptions(tile=16),
                 progress=False)
    local, _ = _keys_and_pixels(tmp_path / "local")
    assert sorted(remote) == sorted(local)
    for key in local:
        np.testing.assert_array_equal(remote[key], local[key])


def test_a_failed_upload_leaves_no_manifest(tmp_path, monkeypatch):
    pytest.importorskip("moto")
    from specaware.testing_remote import s3_client, s3_server

    scene = _scene(tmp_path)
    calls = []
    real_upload = RemoteShardWriter._upload

    def failing_upload(self, path):
        calls.append(path.name)
        if len(calls) == 2:
            raise RemoteReadError("s3://train/b/: upload failed (injected)")
        real_upload(self, path)

    monkeypatch.setattr(RemoteShardWriter, "_upload", failing_upload)
    with s3_server():
        s3_client().create_bucket(Bucket="train")
        with pytest.raises(RemoteReadError, match="injected"):
            shard_scenes([scene], "s3://train/b/", shard_size=1,
                         options=TilingOptions(tile=16), progress=False)
        keys = [o["Key"] for o in s3_client().list_objects_v2(Bucket="train").get("Contents", [])]
    assert "b/manifest.json" not in keys


def test_s3_without_credentials_fails_before_training_naming_the_fix(tmp_path):
    pytest.importorskip("moto")
    from specaware.testing_remote import s3_server

    with s3_server(credentials=False):
        with pytest.raises(ConfigError, match=r"no AWS credentials found.*AWS_ACCESS_KEY_ID"):
            require_shard_files("data.shards", "s3://train/sets/a/")


@pytest.mark.parametrize("fmt", ["ustar", "gnu", "pax"])
def test_streamed_tar_members_match_tarfile_including_long_names(tmp_path, fmt):
    import io
    import tarfile

    from specaware.data.tar_stream import stream_members

    long_key = "k" * 120   # beyond ustar's 100-character name field for gnu / pax
    names = ["a.npy", "a.json", f"{long_key}.npy"] if fmt != "ustar" else ["a.npy", "a.json"]
    form = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT,
            "pax": tarfile.PAX_FORMAT}[fmt]
    with tarfile.open(tmp_path / "s.tar", "w", format=form) as tar:
        for i, name in enumerate(names):
            data = bytes(range(256)) * (i + 3) + b"x" * i   # sizes off the 512-byte grid
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))
    with tarfile.open(tmp_path / "s.tar") as tar:
        want = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    with http_server(tmp_path) as server:
        got = [(f"{k}.{e}", bytes(p)) for k, e, _, _, p in stream_members(server.url("s.tar"))]
    assert got == want
