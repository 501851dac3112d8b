"""Remote scenes over a loopback HTTP server and a loopback S3 server (moto): sharding a URL
gives the same tiles as the local file, only the needed blocks are fetched, and 404 / 403 /
timeouts / missing credentials fail with one line naming the URL without its credentials;
transient errors are retried and counted in the shard report."""
import numpy as np
import pytest

from specaware.data.raster import open_scene
from specaware.data.remote import RemoteReadError, open_raster, redact
from specaware.data.shard import shard_scenes
from specaware.data.tiling import TilingOptions
from specaware.testing import sensor_bands, synthetic_cube, write_geotiff
from specaware.testing_remote import http_server

pytestmark = pytest.mark.timeout(120)
WL, FWHM, _ = sensor_bands("emit", 12)


@pytest.fixture
def scene(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    cube = np.clip(synthetic_cube(WL, 32, 32, seed=5), 0.001, None)
    return write_geotiff(root / "scene.tif", cube, wavelength=WL, fwhm=FWHM, blocksize=16)


@pytest.fixture(autouse=True)
def _fast_network(monkeypatch):
    monkeypatch.setenv("SPECAWARE_HTTP_RETRY_DELAY", "0.05")
    monkeypatch.setenv("SPECAWARE_HTTP_TIMEOUT", "5")


def _tar_bytes(manifest_dir, manifest):
    return [(manifest_dir / s["name"]).read_bytes() for s in manifest["shards"]]


def test_https_scene_shards_exactly_like_the_local_file(scene, tmp_path):
    with http_server(scene.parent) as server:
        remote = open_scene(server.url("scene.tif"))
        np.testing.assert_allclose(remote.wavelength, WL, rtol=1e-5)
        assert remote.name == "scene" and remote.wavelength_source == "band tags"
        got = shard_scenes([server.url("scene.tif")], tmp_path / "remote",
                           options=TilingOptions(tile=16), progress=False)
    want = shard_scenes([scene], tmp_path / "local", options=TilingOptions(tile=16),
                        progress=False)
    assert got["total"] == want["total"] == 4
    assert _tar_bytes(tmp_path / "remote", got) == _tar_bytes(tmp_path / "local", want)
    assert got["report"]["scenes"][0]["path"] == server.url("scene.tif")


def test_one_window_fetches_a_fraction_of_the_file(tmp_path):
    cube = np.ones((len(WL), 256, 256), np.float32)
    path = write_geotiff(tmp_path / "big.tif", cube, wavelength=WL, blocksize=32)
    from rasterio.windows import Window
    with http_server(tmp_path) as server, open_raster(server.url("big.tif")) as src:
        src.read(1, window=Window(0, 0, 32, 32))
        sent = server.bytes_sent["/big.tif"]
    assert sent < path.stat().st_size / 10, (sent, path.stat().st_size)


def test_missing_url_fails_with_404_naming_it(scene, tmp_path):
    with http_server(scene.parent) as server:
        url = server.url("nope.tif")
        with pytest.raises(RemoteReadError, match=r"nope.tif: not found \(HTTP 404\)"):
            shard_scenes([url], tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_forbidden_url_says_access_denied_without_the_credentials(scene, tmp_path):
    with http_server(scene.parent) as server:
        server.faults["/scene.tif"] = "403"
        secret = server.url("scene.tif").replace("http://", "http://alice:hunter2@") + \
            "?X-Amz-Signature=s3cr3t&X-Amz-Credential=AKIAXYZ&v=1"
        with pytest.raises(RemoteReadError) as err:
            open_scene(secret)
    message = str(err.value)
    assert "access denied (HTTP 403)" in message and "scene.tif" in message
    assert "hunter2" not in message and "s3cr3t" not in message and "AKIAXYZ" not in message


def test_redact_removes_userinfo_and_signature_parameters():
    text = redact("failed: https://u:p@host/a.tif?X-Amz-Signature=abc&page=2 (503)")
    assert text == "failed: https://host/a.tif?X-Amz-Signature=REDACTED&page=2 (503)"


def test_transient_errors_are_retried_and_counted(scene, tmp_path):
    with http_server(scene.parent) as server:
        server.faults["/scene.tif"] = "flaky:2"   # the first two requests get HTTP 503
        manifest = shard_scenes([server.url("scene.tif")], tmp_path / "o",
                                options=TilingOptions(tile=16), progress=False)
    assert manifest["total"] == 4
    assert manifest["report"]["retries"] == {"HTTP 503": 2}


def test_a_server_that_never_answers_times_out_naming_the_url(scene, monkeypatch):
    monkeypatch.setenv("SPECAWARE_HTTP_TIMEOUT", "1")
    monkeypatch.setenv("SPECAWARE_HTTP_RETRIES", "0")
    with http_server(scene.parent) as server:
        server.faults["/scene.tif"] = "slow:3"
        with pytest.raises(RemoteReadError, match=r"scene.tif: timed out"):
            open_scene(server.url("scene.tif"))


def test_truncated_response_is_an_error_not_silent_zeros(scene):
    with http_server(scene.parent) as server:
        server.faults["/scene.tif"] = "truncate"
        with pytest.raises((RemoteReadError, OSError)):
            meta = open_scene(server.url("scene.tif"))
            with open_raster(meta.path) as src:
                src.read()


def test_s3_scene_reads_with_credentials_and_fails_clearly_without(scene, tmp_path):
    pytest.importorskip("moto")
    from specaware.testing_remote import s3_client, s3_server

    with s3_server():
        s3_client().create_bucket(Bucket="scenes")
        s3_client().upload_file(str(scene), "scenes", "emit/scene.tif")
        meta = open_scene("s3://scenes/emit/scene.tif")
        np.testing.assert_allclose(meta.wavelength, WL, rtol=1e-5)
        manifest = shard_scenes(["/vsis3/scenes/emit/scene.tif"], tmp_path / "o",
                                options=TilingOptions(tile=16), progress=False)
        assert manifest["total"] == 4
        with pytest.raises(RemoteReadError, match=r"s3://scenes/emit/missing.tif: not found"):
            open_scene("s3://scenes/emit/missing.tif")
    with s3_server(credentials=False):
        with pytest.raises(RemoteReadError, match=r"s3://scenes/emit/scene.tif: .*credentials"):
            open_scene("s3://scenes/emit/scene.tif")
