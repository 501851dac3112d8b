"""One raster reader for both halves: a file gets the same band table through the shard path
(`specaware shard` -> loader) and through the fine-tuning and prediction path, and a file
without wavelengths is refused in one line naming the option of the command that was run."""
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from specaware import resources
from specaware.cli import main as cli_main
from specaware.data.band_metadata import RasterMetadataError
from specaware.data.reader import RasterReader
from specaware.data.stream import make_loader
from specaware.finetune.datasets.geotiff import GeoTiffTiles
from specaware.finetune.predict import open_scenes
from specaware.testing import sensor_bands, synthetic_cube, write_geotiff

# uneven spacing, so an estimated FWHM depends on the estimation rule
WL = np.array([450.0, 470.0, 520.0, 600.0, 610.0, 700.0, 850.0, 1000.0, 1250.0, 1600.0])


def _mask(path, h, w):
    profile = {"driver": "GTiff", "height": h, "width": w, "count": 1, "dtype": "uint8",
               "crs": "EPSG:32611", "transform": from_origin(500000.0, 4100000.0, 2.0, 2.0)}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write((np.arange(h * w).reshape(1, h, w) % 3 + 1).astype(np.uint8))
    return path


def _shard_sample(tmp_path, scene):
    out = tmp_path / "shards"
    assert cli_main(["shard", str(scene), "--out", str(out), "--tile", "16", "--quiet"]) == 0
    batch = next(iter(make_loader(out, mode="eval", batch_size=1, num_workers=0)))
    return batch["wavelength"][0].numpy(), batch["fwhm"][0].numpy()


def test_imagery_domain_wavelengths_are_identical_in_shards_finetuning_and_prediction(tmp_path):
    scene = write_geotiff(tmp_path / "s.tif", synthetic_cube(WL, 32, 32, seed=0),
                          wavelength=WL, style="imagery")   # centres only, no FWHM
    shard_wl, shard_fwhm = _shard_sample(tmp_path, scene)
    tiles = GeoTiffTiles([str(scene)], [str(_mask(tmp_path / "m.tif", 32, 32))], tile=16)
    reader = open_scenes({"task": "segmentation"}, str(scene))[0]
    for wl, fwhm in ((tiles[0]["wavelength"], tiles[0]["fwhm"]), (reader.wavelength, reader.fwhm)):
        assert wl.dtype == shard_wl.dtype == np.float32
        np.testing.assert_array_equal(wl, shard_wl)
        np.testing.assert_array_equal(fwhm, shard_fwhm)
    np.testing.assert_allclose(shard_wl, WL, atol=1e-3)
    # estimated from the local spacing: 20 nm around 450-470, 10 nm around 600-610
    np.testing.assert_allclose(shard_fwhm[[0, 3, 4]], [20.0, 45.0, 50.0], atol=1e-3)


def _bare_scene(tmp_path):
    wl, _, _ = sensor_bands("aviris-ng", 6)
    return write_geotiff(tmp_path / "bare.tif", synthetic_cube(wl, 16, 16), style=None)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_shard_names_its_sensor_flag_when_wavelengths_are_missing(tmp_path, capsys):
    scene = _bare_scene(tmp_path)
    assert cli_main(["shard", str(scene), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = _one_error_line(capsys)
    assert str(scene) in err and "--sensor NAME" in err and "data.sensor" not in err


def test_finetune_names_its_config_keys_when_wavelengths_are_missing(tmp_path, capsys):
    scene = _bare_scene(tmp_path)
    mask = _mask(tmp_path / "m.tif", 16, 16)
    config = resources.config_path("finetune/segmentation.yaml")
    rc = cli_main(["finetune", str(config), "--init", "random", "--out", str(tmp_path / "run"),
                   f"data.images=[{scene}]", f"data.masks=[{mask}]", "protocol.tile=8",
                   "--no-progress"])
    assert rc == 2
    err = _one_error_line(capsys)
    assert str(scene) in err and "data.sensor=NAME" in err and "data.wavelength=FILE" in err


def test_a_wavelength_file_wins_and_is_converted_from_micrometres(tmp_path):
    scene = write_geotiff(tmp_path / "s.tif", synthetic_cube(WL, 16, 16), wavelength=WL,
                          style="imagery")
    table = tmp_path / "bands.csv"
    table.write_text("\n".join(f"{w / 1000:.4f},{0.012:.3f}" for w in WL + 5.0))
    reader = RasterReader.open(scene, wavelength_file=str(table))
    np.testing.assert_allclose(reader.wavelength, WL + 5.0, atol=1e-3)
    np.testing.assert_allclose(reader.fwhm, 12.0, atol=1e-3)
    assert reader.scene.wavelength_source == "wavelength file (bands.csv)"


def test_imagery_names_as_plain_band_tags_are_read_too(tmp_path):
    scene = write_geotiff(tmp_path / "s.tif", synthetic_cube(WL, 16, 16), style=None)
    with rasterio.open(scene, "r+") as dst:
        for i, w in enumerate(WL, start=1):
            dst.update_tags(i, CENTRAL_WAVELENGTH_UM=f"{w / 1000:.4f}", FWHM_UM="0.010")
    reader = RasterReader.open(scene)
    np.testing.assert_allclose(reader.wavelength, WL, atol=1e-3)
    np.testing.assert_allclose(reader.fwhm, 10.0, atol=1e-3)


def test_a_wavelength_tag_that_is_no_number_names_the_band(tmp_path):
    scene = write_geotiff(tmp_path / "s.tif", synthetic_cube(WL, 16, 16), style=None)
    with rasterio.open(scene, "r+") as dst:
        for i, w in enumerate(WL, start=1):
            dst.update_tags(i, wavelength="n/a" if i == 3 else f"{w:.1f}")
    with pytest.raises(RasterMetadataError, match=r"s\.tif: band 3 tag 'wavelength' = 'n/a'"):
        RasterReader.open(scene)
