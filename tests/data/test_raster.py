"""Raster ingestion: wavelengths from every place a file can carry them, in nm or micrometres,
clear errors when they are missing or inconsistent, and window-wise reads equal to whole reads."""
import numpy as np
import pytest
import rasterio

from specaware.data import raster
from specaware.data.raster import RasterMetadataError, iter_tiles, open_scene, tile_origins
from specaware.testing import sensor_bands, synthetic_cube, write_envi, write_geotiff

WL, FWHM, NAMES = sensor_bands("aviris-ng", 12)


@pytest.fixture
def cube():
    return synthetic_cube(WL, 40, 36, seed=1)


@pytest.mark.parametrize("style,units,source", [
    ("band_tags", "nm", "band tags"), ("band_tags", "um", "band tags"),
    ("envi", "nm", "envi header"), ("envi", "um", "envi header"),
    ("imagery", "um", "gdal imagery"),
])
def test_geotiff_wavelength_round_trip(tmp_path, cube, style, units, source):
    path = write_geotiff(tmp_path / "s.tif", cube, wavelength=WL, fwhm=FWHM, units=units,
                         style=style)
    scene = open_scene(path)
    assert scene.wavelength_source == source and scene.sensor == "unknown"
    assert scene.wavelength.dtype == np.float32
    np.testing.assert_allclose(scene.wavelength, WL, atol=1e-3)
    np.testing.assert_allclose(scene.fwhm, FWHM, atol=1e-3)
    assert (scene.gsd, scene.crs, scene.level) == (2.0, "EPSG:32611", "L2")


@pytest.mark.parametrize("units", ["nm", "um"])
@pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
def test_envi_header_round_trip_in_nm_and_micrometres(tmp_path, cube, units, interleave):
    path = write_envi(tmp_path / "s.img", cube, wavelength=WL, fwhm=FWHM, units=units,
                      interleave=interleave, nodata=-9999)
    scene = open_scene(path)
    assert scene.wavelength_source == "envi header"
    np.testing.assert_allclose(scene.wavelength, WL, atol=1e-3)
    np.testing.assert_allclose(scene.fwhm, FWHM, atol=1e-3)
    assert scene.nodata == [-9999.0] * 12 and scene.gsd == 2.0
    first = next(iter_tiles(scene, 8))
    np.testing.assert_array_equal(first.data, cube[:, :8, :8])


def test_unlabelled_micrometre_tags_are_recognised_by_magnitude(tmp_path, cube):
    path = write_geotiff(tmp_path / "s.tif", cube, style=None)
    with rasterio.open(path, "r+") as dst:
        for i, w in enumerate(WL):
            dst.update_tags(i + 1, wavelength=f"{w / 1000:.6f}")
    scene = open_scene(path)
    np.testing.assert_allclose(scene.wavelength, WL, atol=1e-2)
    np.testing.assert_allclose(scene.fwhm[1:-1], np.gradient(WL)[1:-1], rtol=0.05)  # estimated


@pytest.mark.parametrize("fmt", ["envi", "geotiff"])
def test_no_wavelengths_and_no_sensor_fails_naming_the_file(tmp_path, cube, fmt):
    path = (write_envi(tmp_path / "bare_scene.img", cube) if fmt == "envi" else
            write_geotiff(tmp_path / "bare_scene.tif", cube, style=None))
    with pytest.raises(RasterMetadataError, match=rf"{path.name.replace('.', '[.]')}: no "
                                                  r"wavelengths found.*--sensor NAME"):
        open_scene(path)


def test_sensor_fills_in_when_the_file_has_no_wavelengths(tmp_path):
    wl, fwhm, _ = sensor_bands("sentinel-2a")
    path = write_geotiff(tmp_path / "s2.tif", synthetic_cube(wl, 8, 8), style=None)
    scene = open_scene(path, sensor="S2A")
    assert scene.sensor == "sentinel-2a" and scene.wavelength_source.startswith("sensor")
    np.testing.assert_array_equal(scene.wavelength, wl)


def test_sensor_bands_are_matched_by_description_when_some_are_missing(tmp_path):
    wl, _, names = sensor_bands("sentinel-2a")
    keep = [i for i, n in enumerate(names) if n != "B10"]  # L2A products drop the cirrus band
    described = [names[i].replace("B", "B0") if len(names[i]) == 2 else names[i] for i in keep]
    path = write_geotiff(tmp_path / "l2a.tif", synthetic_cube(wl[keep], 8, 8), style=None,
                         band_names=described)
    scene = open_scene(path, sensor="sentinel-2a")
    np.testing.assert_array_equal(scene.wavelength, wl[keep])
    assert scene.band_names == [names[i] for i in keep]


def test_band_count_mismatch_with_sensor_fails_clearly(tmp_path):
    path = write_geotiff(tmp_path / "odd.tif", np.zeros((5, 8, 8), np.float32), style=None)
    with pytest.raises(RasterMetadataError, match=r"odd\.tif: the file has 5 bands but sensor "
                                                  r"'aviris-ng' has 425"):
        open_scene(path, sensor="aviris-ng")


def test_header_wavelength_count_mismatch_fails_clearly(tmp_path, cube):
    path = write_envi(tmp_path / "short.img", cube, wavelength=WL[:-1], fwhm=FWHM[:-1])
    with pytest.raises(RasterMetadataError, match=r"short\.img: .*11 wavelengths but the file "
                                                  r"has 12 bands"):
        open_scene(path)


def test_file_wavelengths_win_over_the_sensor(tmp_path, cube):
    path = write_geotiff(tmp_path / "s.tif", cube, wavelength=WL + 3.0, fwhm=FWHM)
    scene = open_scene(path, sensor="aviris-ng")
    np.testing.assert_allclose(scene.wavelength, WL + 3.0, atol=1e-3)
    assert scene.sensor == "aviris-ng" and scene.wavelength_source == "band tags"


def test_scale_and_offset_from_file_and_override(tmp_path, cube):
    dn = np.rint(cube * 10000).astype("int16")
    path = write_geotiff(tmp_path / "dn.tif", dn, wavelength=WL, fwhm=FWHM, dtype="int16")
    with rasterio.open(path, "r+") as dst:
        dst.scales = [1e-4] * 12
    tile = next(iter_tiles(open_scene(path), 8))
    np.testing.assert_allclose(tile.data, cube[:, :8, :8], atol=6e-5)
    tile = next(iter_tiles(open_scene(path, scale=2e-4, offset=-0.1), 8))
    np.testing.assert_allclose(tile.data, dn[:, :8, :8] * 2e-4 - 0.1, atol=1e-6)


def test_missing_georeferencing_needs_a_gsd(tmp_path, cube):
    path = write_envi(tmp_path / "nogeo.img", cube, wavelength=WL, fwhm=FWHM, crs_zone=None)
    with pytest.raises(RasterMetadataError, match="--gsd METRES"):
        open_scene(path)
    assert open_scene(path, gsd=3.5).gsd == 3.5 and open_scene(path, sensor="avng").gsd == 5.0


def test_geographic_crs_gives_gsd_in_metres(tmp_path, cube):
    path = write_geotiff(tmp_path / "ll.tif", cube, wavelength=WL, fwhm=FWHM, crs="EPSG:4326",
                         origin=(10.0, 0.001), gsd=1e-4)
    assert open_scene(path).gsd == pytest.approx(11.1, rel=0.01)


def test_tile_origins_cover_the_extent_and_snap_the_last_tile():
    assert tile_origins(40, 16, 16) == [0, 16, 24]
    assert tile_origins(32, 16, 16) == [0, 16]
    assert tile_origins(40, 16, 8) == [0, 8, 16, 24]
    assert tile_origins(10, 16, 16) == []
    assert tile_origins(16, 16, 8) == [0]          # a scene exactly one tile wide: one tile


@pytest.mark.parametrize("strip_limit", [raster.MAX_STRIP_BYTES, 1])
@pytest.mark.parametrize("stride", [16, 10])
def test_windowed_tiles_equal_whole_read_and_never_read_the_whole_scene(
        tmp_path, cube, monkeypatch, strip_limit, stride):
    path = write_envi(tmp_path / "s.img", cube, wavelength=WL, fwhm=FWHM)
    scene = open_scene(path)
    with rasterio.open(path) as src:
        whole = src.read()
    monkeypatch.setattr(raster, "MAX_STRIP_BYTES", strip_limit)
    windows = []
    real_read = raster.read_window
    monkeypatch.setattr(raster, "read_window",
                        lambda src, sc, w: windows.append(w) or real_read(src, sc, w))
    tiles = list(iter_tiles(scene, 16, stride))
    rows, cols = tile_origins(40, 16, stride), tile_origins(36, 16, stride)
    assert [(t.row, t.col) for t in tiles] == [(r, c) for r in rows for c in cols]
    for t in tiles:
        np.testing.assert_array_equal(t.data, whole[:, t.row:t.row + 16, t.col:t.col + 16])
        assert t.transform == scene.transform @ rasterio.Affine.translation(t.col, t.row)
    assert windows and all(w.height == 16 for w in windows)
    assert len(windows) == (len(rows) if strip_limit > 1 else len(tiles))


def test_plain_sensor_and_level_tags_are_used_when_they_name_catalogue_entries(tmp_path, cube):
    path = write_geotiff(tmp_path / "t.tif", cube, wavelength=WL, fwhm=FWHM,
                         tags={"sensor": "aviris-ng", "level": "l1"})
    scene = open_scene(path)
    assert (scene.sensor, scene.level) == ("aviris-ng", "L1")
    free = write_geotiff(tmp_path / "f.tif", cube, wavelength=WL, fwhm=FWHM,
                         tags={"sensor": "my airborne camera"})
    assert open_scene(free).sensor == "unknown"
    strict = write_geotiff(tmp_path / "s.tif", cube, wavelength=WL, fwhm=FWHM,
                           tags={"SPECAWARE_SENSOR": "nosuch"})
    with pytest.raises(KeyError, match="unknown sensor 'nosuch'"):
        open_scene(strict)


def test_geographic_gsd_is_taken_at_the_scene_centre_latitude(tmp_path, cube):
    # 40 rows of 0.5 degrees from 70 N: the centre is at 60 N, where a degree of longitude is
    # half as long; 111 320 m and 110 574 m per degree of longitude (equator) and latitude
    path = write_geotiff(tmp_path / "north.tif", cube, wavelength=WL, fwhm=FWHM,
                         crs="EPSG:4326", origin=(10.0, 70.0), gsd=0.5)
    assert cube.shape[1] == 40
    want = (111_320.0 * 0.5 * 0.5 + 110_574.0 * 0.5) / 2
    assert open_scene(path).gsd == pytest.approx(want, rel=1e-9)


def test_missing_gsd_error_says_how_to_give_a_gsd_or_a_sensor(tmp_path, cube):
    path = write_envi(tmp_path / "nogeo.img", cube, wavelength=WL, fwhm=FWHM, crs_zone=None)
    with pytest.raises(RasterMetadataError, match="pass --gsd METRES or --sensor NAME$"):
        open_scene(path)


@pytest.mark.parametrize("below,reads", [(0, 1), (1, 3)])
def test_a_strip_one_byte_over_the_limit_is_read_tile_by_tile(tmp_path, cube, monkeypatch,
                                                                below, reads):
    path = write_envi(tmp_path / "s.img", cube, wavelength=WL, fwhm=FWHM)
    scene = open_scene(path)
    strip = len(WL) * 16 * 36 * 4            # 12 bands x 16 rows x 36 columns of float32
    monkeypatch.setattr(raster, "MAX_STRIP_BYTES", strip - below)
    windows = []
    real_read = raster.read_window
    monkeypatch.setattr(raster, "read_window",
                        lambda src, sc, w: windows.append(w) or real_read(src, sc, w))
    with rasterio.open(path) as src:
        tiles = list(raster.iter_strip(src, scene, 0, 16, [0, 16, 20]))
    assert len(windows) == reads and [t.col for t in tiles] == [0, 16, 20]
    assert max(w.width for w in windows) == (36 if reads == 1 else 16)


def test_an_emit_netcdf_opens_through_its_reflectance_cube(tmp_path, cube):
    from specaware.testing import write_emit_nc
    path = write_emit_nc(tmp_path / "EMIT_L2A_RFL.nc", cube, wavelength=WL, fwhm=FWHM)
    scene = open_scene(path, gsd=60.0)
    assert scene.num_bands == len(WL) and str(scene.path).startswith("EMIT:")
    np.testing.assert_allclose(scene.wavelength, WL, rtol=1e-6)


def test_a_wavelength_file_wins_over_the_files_own_centres(tmp_path, cube):
    path = write_geotiff(tmp_path / "s.tif", cube, wavelength=WL, fwhm=FWHM)
    table = tmp_path / "bands.csv"
    table.write_text("\n".join(f"{w + 5.0:.3f},{12.0:.3f}" for w in WL))
    scene = open_scene(path, wavelength_file=str(table))
    np.testing.assert_allclose(scene.wavelength, np.asarray(WL) + 5.0, atol=1e-3)
    assert scene.wavelength_source == "wavelength file (bands.csv)"
