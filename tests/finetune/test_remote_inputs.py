"""Fine-tuning and prediction read remote scenes: the GeoTIFF reader gives the same band table
and windows from a loopback https URL as from the file, and a 404 URL in the config is a
config error naming the key before any model is built."""
import numpy as np
import pytest

from specaware.config import ConfigError
from specaware.data.reader import RasterReader
from specaware.finetune.runner import _require_input
from specaware.testing import sensor_bands, synthetic_cube, write_geotiff
from specaware.testing_remote import http_server

pytestmark = pytest.mark.timeout(120)


def test_remote_geotiff_reads_like_the_local_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECAWARE_HTTP_RETRY_DELAY", "0.05")
    wl, fwhm, _ = sensor_bands("enmap", 10)
    path = write_geotiff(tmp_path / "scene.tif", synthetic_cube(wl, 32, 32), wavelength=wl,
                         fwhm=fwhm)
    local = RasterReader.open(str(path))
    with http_server(tmp_path) as server:
        remote = RasterReader.open(server.url("scene.tif"))
        np.testing.assert_allclose(remote.wavelength, local.wavelength)
        assert remote.shape == local.shape and remote.normalization == local.normalization
        got, want = remote.read(8, 4, 16, 16), local.read(8, 4, 16, 16)
        np.testing.assert_array_equal(got["image"], want["image"])
        _require_input("data.image", server.url("scene.tif"))
        with pytest.raises(ConfigError, match=r"'data.image': .*missing.tif: not found"):
            _require_input("data.image", server.url("missing.tif"))
