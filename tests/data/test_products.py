"""Products that are not one multi-band raster shard as one scene: a NetCDF cube with a
wavelength coordinate, a NetCDF with one variable per band (Sentinel-2 L3 style), a folder of
one file per band (Landsat collection, Sentinel-2 SAFE at mixed resolutions); an ambiguous
container fails listing its subdatasets; NetCDF rows land where the file says (CF y axis, or
file order without one). Fixtures are tiny files (specaware.testing.write_netcdf, netCDF4)."""
import numpy as np
import pytest

from specaware.data.products import as_scene
from specaware.data.raster import RasterMetadataError, open_scene
from specaware.data.shard import shard_scenes
from specaware.data.tiling import TilingOptions
from specaware.testing import sensor_bands, synthetic_cube, write_geotiff, write_netcdf

netCDF4 = pytest.importorskip("netCDF4")
WL, FWHM, _ = sensor_bands("emit", 6)


def test_netcdf_cube_with_wavelength_coordinate_is_one_scene(tmp_path):
    cube = np.clip(synthetic_cube(WL, 32, 32), 0.001, None)
    path = write_netcdf(tmp_path / "emit_like.nc", {"reflectance": cube,
                                              "quality": np.zeros((32, 32), np.float32)},
                   wavelength=np.asarray(WL) / 1000.0, units="micrometers")
    scene = open_scene(as_scene(path), gsd=2.0)
    assert scene.num_bands == len(WL) and scene.name == "emit_like"
    np.testing.assert_allclose(scene.wavelength, WL, rtol=1e-5)
    manifest = shard_scenes([path], tmp_path / "o", options=TilingOptions(tile=16),
                            progress=False, gsd=2.0)
    assert manifest["total"] == 4 and manifest["sensors"]["unknown"]["bands"] == [len(WL)]


@pytest.mark.parametrize("cf", [True, False])
def test_netcdf_with_one_variable_per_band_stacks_them_in_band_order(tmp_path, cf):
    from specaware.data.raster import iter_tiles

    wl, _, names = sensor_bands("sentinel-2a")
    picked = {"B08": 7, "B02": 1, "B04": 3, "B03": 2}   # written out of order
    cube = np.clip(synthetic_cube(wl, 32, 32), 0.001, None).astype(np.float32)
    path = write_netcdf(tmp_path / "s2_l3.nc", {k: cube[i] for k, i in picked.items()}, cf=cf)
    scene = open_scene(as_scene(path), sensor="sentinel-2a", gsd=10.0)
    assert scene.band_names == ["B2", "B3", "B4", "B8"]
    np.testing.assert_allclose(scene.wavelength, wl[[1, 2, 3, 7]])
    assert scene.crs == ("EPSG:32611" if cf else None)
    # rows where the file has them, through the stacking VRT too (north-up or file order)
    (tile,) = [t.data for t in iter_tiles(scene, 16) if (t.row, t.col) == (0, 16)]
    np.testing.assert_array_equal(tile, cube[[1, 2, 3, 7], :16, 16:])


def test_ambiguous_container_lists_its_subdatasets(tmp_path):
    cube = np.ones((3, 16, 16), np.float32)
    path = write_netcdf(tmp_path / "two.nc", {"radiance": cube, "reflectance": cube})
    with pytest.raises(RasterMetadataError) as err:
        as_scene(path)
    message = str(err.value)
    assert "two.nc: ambiguous product" in message and "--subdataset" in message
    assert ":radiance" in message and ":reflectance" in message
    chosen = as_scene(path, "reflectance")
    assert str(chosen).endswith(":reflectance")
    with pytest.raises(RasterMetadataError, match=r"no subdataset 'bogus'; choose one of"):
        as_scene(path, "bogus")


def test_landsat_folder_of_band_files_is_one_scene(tmp_path):
    wl, _, names = sensor_bands("landsat-9")
    folder = tmp_path / "LC09_L2SP_042034_20240501_20240502_02_T1"
    folder.mkdir()
    cube = np.clip(synthetic_cube(wl, 32, 32), 0.001, None)
    for i in (6, 0, 3, 2, 1, 4, 5):   # B7 first: order must come from the band numbers
        write_geotiff(folder / f"{folder.name}_SR_B{i + 1}.TIF", cube[i:i + 1], style=None,
                      gsd=30.0)
    (folder / f"{folder.name}_QA_PIXEL.TIF").write_bytes(b"not a band")
    scene = open_scene(as_scene(folder), sensor="landsat-9")
    assert scene.band_names == ["B1", "B2", "B3", "B4", "B5", "B6", "B7"]
    np.testing.assert_allclose(scene.wavelength, wl[:7])
    assert scene.gsd == 30.0 and scene.name == folder.name


def test_safe_folder_takes_the_finest_copy_and_resamples_coarse_bands(tmp_path):
    wl, _, _ = sensor_bands("sentinel-2a")
    safe = tmp_path / "S2A_MSIL2A_20240501.SAFE" / "GRANULE" / "L2A_T11SKA" / "IMG_DATA"
    for res in ("R10m", "R20m"):
        (safe / res).mkdir(parents=True)
    fine = np.full((1, 32, 32), 0.2, np.float32)
    coarse = np.full((1, 16, 16), 0.4, np.float32)
    write_geotiff(safe / "R10m" / "T11SKA_B02_10m.tif", fine, style=None, gsd=10.0)
    write_geotiff(safe / "R20m" / "T11SKA_B02_20m.tif", coarse, style=None, gsd=20.0)
    write_geotiff(safe / "R20m" / "T11SKA_B05_20m.tif", coarse, style=None, gsd=20.0)
    scene = open_scene(as_scene(tmp_path / "S2A_MSIL2A_20240501.SAFE"), sensor="sentinel-2a")
    assert scene.band_names == ["B2", "B5"] and (scene.width, scene.height) == (32, 32)
    assert scene.name == "S2A_MSIL2A_20240501" and scene.gsd == 10.0
    import rasterio
    with rasterio.open(scene.path) as src:
        np.testing.assert_allclose(src.read(1), 0.2)   # the 10 m copy, not the 20 m one
        np.testing.assert_allclose(src.read(2), 0.4)


def test_bands_on_different_footprints_are_refused(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_geotiff(folder / "x_B1.tif", np.ones((1, 16, 16), np.float32), style=None)
    write_geotiff(folder / "x_B2.tif", np.ones((1, 16, 16), np.float32), style=None,
                  origin=(600000.0, 4100000.0))
    with pytest.raises(RasterMetadataError, match=r"x_B2.tif: band B2 covers .* must share"):
        as_scene(folder)


def test_remote_netcdf_cube_over_vsicurl_reads_like_the_local_file(tmp_path, monkeypatch):
    from specaware.data.raster import iter_tiles
    from specaware.testing_remote import http_server

    monkeypatch.setenv("SPECAWARE_HTTP_RETRY_DELAY", "0.05")
    cube = np.clip(synthetic_cube(WL, 32, 32), 0.001, None).astype(np.float32)
    path = write_netcdf(tmp_path / "cube.nc", {"reflectance": cube,
                                          "quality": np.zeros((32, 32), np.float32)},
                   wavelength=np.asarray(WL), units="nm")
    local = {(t.row, t.col): t.data.copy()
             for t in iter_tiles(open_scene(as_scene(path), gsd=2.0), 16)}
    with http_server(tmp_path) as server:
        # the URL's colons (http:, :port) once broke GDAL's NETCDF:file:var parsing
        scene = open_scene(as_scene(server.url("cube.nc")), gsd=2.0)
        tiles = {(t.row, t.col): t.data for t in iter_tiles(scene, 16)}
        with pytest.raises(RasterMetadataError, match=r"ambiguous product.*\n  NETCDF:\"/vsicurl/"
                                                      r"http://127\.0\.0\.1:\d+/two\.nc\":a"):
            write_netcdf(tmp_path / "two.nc", {"a": cube[:3], "b": cube[:3]})
            as_scene(server.url("two.nc"))
    np.testing.assert_allclose(scene.wavelength, WL, rtol=1e-5)
    assert sorted(tiles) == sorted(local) == [(0, 0), (0, 16), (16, 0), (16, 16)]
    for origin, data in tiles.items():
        np.testing.assert_array_equal(data, local[origin])


def _marked_cube():
    """[C, 32, 32] with every pixel distinct: row r, col c of band b holds b*10000 + r*100 + c."""
    b, r, c = np.indices((3, 32, 32))
    return (b * 10000 + r * 100 + c).astype(np.float32)


@pytest.mark.parametrize("south_first", [False, True])
def test_cf_netcdf_rows_land_north_up_however_the_file_stores_them(tmp_path, south_first):
    from specaware.data.raster import iter_tiles

    cube = _marked_cube()
    path = write_netcdf(tmp_path / "cf.nc", {"reflectance": cube}, wavelength=WL[:3],
                        south_first=south_first)
    scene = open_scene(as_scene(path))
    assert scene.crs == "EPSG:32611" and scene.gsd == 2.0
    assert scene.transform @ (0, 0) == (500000.0, 4100000.0)
    assert scene.wavelength_source == "NetCDF wavelength coordinate"
    tiles = {(t.row, t.col): t.data for t in iter_tiles(scene, 16)}
    np.testing.assert_array_equal(tiles[(0, 0)][:, 0, :], cube[:, 0, :16])   # northern row
    np.testing.assert_array_equal(tiles[(16, 16)], cube[:, 16:, 16:])


def test_netcdf_without_cf_axes_reads_rows_in_file_order_and_says_so_once(tmp_path, caplog):
    import logging

    from specaware.data.raster import iter_tiles
    from specaware.data.remote import open_raster

    cube = _marked_cube()
    path = write_netcdf(tmp_path / "plain.nc", {"reflectance": cube}, wavelength=WL[:3],
                        cf=False)
    with caplog.at_level(logging.WARNING, logger="specaware.data.cube_geo"):
        scene = open_scene(as_scene(path), gsd=2.0)
        tiles = {(t.row, t.col): t.data for t in iter_tiles(scene, 16)}
        with open_raster(f'NETCDF:"{path}":reflectance') as src:
            direct = src.read(1)
    assert scene.crs is None and scene.transform.is_identity
    # row 0 is the first row stored (GDAL alone returns the last one there)
    np.testing.assert_array_equal(tiles[(0, 0)][:, 0, :], cube[:, 0, :16])
    np.testing.assert_array_equal(tiles[(16, 0)], cube[:, 16:, :16])
    np.testing.assert_array_equal(direct, cube[0])
    notes = [r.getMessage() for r in caplog.records if "plain.nc" in r.getMessage()]
    assert len(notes) == 1 and "without a CF y axis" in notes[0] and "file order" in notes[0]


def test_a_users_gdal_netcdf_bottomup_setting_wins(tmp_path, monkeypatch):
    from specaware.data.remote import open_raster

    cube = _marked_cube()
    path = write_netcdf(tmp_path / "plain.nc", {"reflectance": cube}, wavelength=WL[:3],
                        cf=False)
    monkeypatch.setenv("GDAL_NETCDF_BOTTOMUP", "YES")
    with open_raster(f'NETCDF:"{path}":reflectance') as src:
        np.testing.assert_array_equal(src.read(1), cube[0, ::-1])   # GDAL's own bottom-up
