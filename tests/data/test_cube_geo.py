"""EMIT and PRISMA cubes say where their pixels are (data/cube_geo.py): PRISMA L2D tiles carry
the file's UTM CRS and a transform from its corner-pixel centres; PRISMA L2B/L2C and EMIT swath
scenes carry none and say so once; an EMIT scene read through its GLT (EMIT-ORTHO:, `specaware
shard --ortho`) is the GLT's map grid, each pixel the swath pixel the GLT names. Files are
written with the products' layouts (specaware.testing); no real product is available here."""
import logging

import numpy as np
import pytest

from specaware.data.h5_cubes import cube_name
from specaware.data.raster import iter_tiles, open_scene
from specaware.data.shard import shard_scenes
from specaware.data.tiling import TilingOptions
from specaware.testing import (EMIT_GEOTRANSFORM, PRISMA_UL_CENTRE, sensor_bands,
                               synthetic_cube, write_emit_nc, write_prisma_he5)

pytest.importorskip("h5py")
WL, FWHM, _ = sensor_bands("emit", 5)


def _prisma(tmp_path, level="L2D", height=10, width=12, **kwargs):
    rng = np.random.default_rng(1)
    vnir = rng.integers(1, 60000, (2, height, width), dtype=np.uint16)
    swir = rng.integers(1, 60000, (2, height, width), dtype=np.uint16)
    path = write_prisma_he5(tmp_path / f"PRS_{level}_STD_geo.he5", vnir, swir,
                            cw_vnir=[750.0, 500.0], fwhm_vnir=[10.0, 10.0],
                            cw_swir=[2200.0, 1600.0], fwhm_swir=[9.0, 9.0], level=level,
                            **kwargs)
    return path, vnir


def test_prisma_l2d_tiles_carry_the_utm_grid_of_the_corner_pixel_centres(tmp_path):
    path, vnir = _prisma(tmp_path)
    scene = open_scene(path)
    assert scene.crs == "EPSG:32633" and scene.gsd == 30.0
    east, north = PRISMA_UL_CENTRE
    # the corner attributes are pixel centres: the grid starts half a pixel before them
    assert tuple(scene.transform)[:6] == (30.0, 0.0, east - 15.0, 0.0, -30.0, north + 15.0)
    (tile,) = [t for t in iter_tiles(scene, 4) if (t.row, t.col) == (4, 8)]
    assert tile.transform @ (0.5, 0.5) == (east + 8 * 30.0, north - 4 * 30.0)
    lr = scene.transform @ (scene.width - 0.5, scene.height - 0.5)
    assert lr == (east + 11 * 30.0, north - 9 * 30.0)  # the Product_LRcorner_* attributes
    manifest = shard_scenes([path], tmp_path / "o", options=TilingOptions(tile=4),
                            progress=False)
    west, south, east_deg, north_deg = manifest["bounds"]
    assert 16.0 < west < east_deg < 16.5 and 40.5 < south < north_deg < 40.7  # UTM 33N, 100 km E
    assert manifest["report"]["scenes"][0]["crs"] == "EPSG:32633"


def test_prisma_l2d_pixel_size_comes_from_the_corners_not_the_catalogue(tmp_path):
    path, _ = _prisma(tmp_path, pixel=29.5)
    scene = open_scene(path)
    assert scene.gsd == pytest.approx(29.5) and scene.transform.a == pytest.approx(29.5)


@pytest.mark.parametrize("level", ["L2C", "L2B"])
def test_prisma_swath_levels_carry_no_crs_and_say_so_once(tmp_path, caplog, level):
    path, _ = _prisma(tmp_path, level=level)
    with caplog.at_level(logging.WARNING, logger="specaware.data.cube_geo"):
        scene = open_scene(path)
        assert len(list(iter_tiles(scene, 4))) == 9   # reopens the file for the tiles
    assert scene.crs is None and scene.transform.is_identity and scene.gsd == 30.0
    notes = [r.getMessage() for r in caplog.records if path.name in r.getMessage()]
    assert len(notes) == 1 and f"PRISMA {level} is in swath geometry" in notes[0]
    with pytest.raises(ValueError, match=rf"{path.name}: PRISMA {level} is swath geometry "
                                         r"without a lookup table"):
        cube_name(path, ortho=True)


def test_prisma_l2d_without_its_projection_attributes_is_noted_not_guessed(tmp_path, caplog):
    path, _ = _prisma(tmp_path, epsg=None)
    with caplog.at_level(logging.WARNING, logger="specaware.data.cube_geo"):
        scene = open_scene(path)
    assert scene.crs is None
    assert any("without the root attribute(s) Epsg_Code" in r.getMessage()
               for r in caplog.records)


def _emit_with_glt(tmp_path, fill_corner=True):
    """A 6 x 5 swath on a 5 x 7 output grid: the swath turned by 90 degrees (downtrack runs
    west to east), one empty output column, one swath pixel used twice."""
    cube = np.clip(synthetic_cube(WL, 6, 5, seed=4), 0.001, None).astype(np.float32)
    glt_x = np.zeros((5, 7), np.int32)
    glt_y = np.zeros((5, 7), np.int32)
    for r in range(5):          # output row r takes swath column 4 - r
        for c in range(6):      # output column c takes swath row c
            glt_x[r, c], glt_y[r, c] = 5 - r, c + 1
    glt_x[0, 0], glt_y[0, 0] = 2, 3   # a duplicate, as GLT nearest-neighbour gives at edges
    if fill_corner:
        cube[:, 5, 0] = np.nan        # a swath fill pixel (output row 4, column 5)
    path = write_emit_nc(tmp_path / "EMIT_L2A_RFL_glt.nc", cube, wavelength=WL, fwhm=FWHM,
                         glt=(glt_x, glt_y))
    return path, cube, glt_x, glt_y


def _expected(cube, glt_x, glt_y):
    out = np.full((cube.shape[0], *glt_x.shape), np.nan, np.float32)
    for r in range(glt_x.shape[0]):
        for c in range(glt_x.shape[1]):
            if glt_x[r, c] and glt_y[r, c]:
                out[:, r, c] = cube[:, glt_y[r, c] - 1, glt_x[r, c] - 1]
    return out


def test_emit_swath_carries_no_crs_and_points_to_ortho(tmp_path, caplog):
    path, cube, _, _ = _emit_with_glt(tmp_path)
    with caplog.at_level(logging.WARNING, logger="specaware.data.cube_geo"):
        scene = open_scene(path)
    assert scene.crs is None and (scene.height, scene.width) == (6, 5)
    (note,) = [r.getMessage() for r in caplog.records if path.name in r.getMessage()]
    assert "EMIT L2A is in swath geometry" in note and "EMIT-ORTHO:" in note


def test_emit_ortho_reads_each_grid_pixel_from_the_swath_pixel_its_glt_names(tmp_path):
    path, cube, glt_x, glt_y = _emit_with_glt(tmp_path)
    name = cube_name(path, ortho=True)
    assert name == f"EMIT-ORTHO:{path}" and cube_name(name) == name
    scene = open_scene(name)
    assert (scene.height, scene.width, scene.crs) == (5, 7, "EPSG:4326")
    assert tuple(scene.transform)[:6] == tuple(EMIT_GEOTRANSFORM[i] for i in (1, 2, 0, 4, 5, 3))
    assert scene.gsd == pytest.approx(54.0, abs=6.0)  # 0.000542 degrees at 37 N
    want = _expected(cube, glt_x, glt_y)
    tiles = {(t.row, t.col): t for t in iter_tiles(scene, 3)}
    assert sorted(tiles) == [(0, 0), (0, 3), (0, 4), (2, 0), (2, 3), (2, 4)]
    for (r, c), tile in tiles.items():
        np.testing.assert_array_equal(tile.nodata, np.isnan(want[:, r:r + 3, c:c + 3]))
        np.testing.assert_array_equal(tile.data[~tile.nodata],
                                      want[:, r:r + 3, c:c + 3][~tile.nodata])
    # hand-checked pixels: output (1, 2) is swath row 2, column 3; the empty column is nodata
    np.testing.assert_array_equal(tiles[(0, 0)].data[:, 1, 2], cube[:, 2, 3])
    assert tiles[(2, 4)].nodata[:, :, 2].all()                     # output column 6
    assert tiles[(2, 3)].nodata[:, 2, 2].all()                     # swath fill at (4, 5)
    np.testing.assert_array_equal(tiles[(0, 0)].data[:, 0, 0], cube[:, 2, 1])  # the duplicate
    assert tiles[(0, 3)].transform @ (0, 0) == pytest.approx((-117.0 + 3 * 0.000542, 37.0))


def test_emit_ortho_decimated_read_takes_every_other_grid_pixel(tmp_path):
    from specaware.data.reader import read_decimated

    path, cube, glt_x, glt_y = _emit_with_glt(tmp_path, fill_corner=False)
    decimated = read_decimated(open_scene(cube_name(path, ortho=True)), side=3)
    want = _expected(cube, glt_x, glt_y)[:, :4:2, :6:2]  # step 7 // 3 = 2, 2 x 3 pixels
    np.testing.assert_array_equal(np.isnan(decimated), np.isnan(want))
    np.testing.assert_array_equal(decimated[~np.isnan(want)], want[~np.isnan(want)])


def test_emit_ortho_without_a_glt_names_the_file_and_the_missing_member(tmp_path):
    import h5py

    path, _, _, _ = _emit_with_glt(tmp_path)
    with h5py.File(path, "a") as h5:
        del h5["location/glt_y"]
    with pytest.raises(ValueError, match=r"EMIT_L2A_RFL_glt\.nc: cannot orthorectify, no "
                                         r"location/glt_y"):
        open_scene(cube_name(path, ortho=True))


def test_specaware_shard_ortho_writes_georeferenced_emit_tiles_named_by_the_file(
        tmp_path, monkeypatch, capsys):
    import json

    from specaware.cli import main

    path, _, _, _ = _emit_with_glt(tmp_path)
    prisma, _ = _prisma(tmp_path)
    monkeypatch.chdir(tmp_path)   # relative names: the EMIT: prefix must not reach tile keys
    assert main(["shard", path.name, prisma.name, "--out", "o", "--tile", "4", "--quiet",
                 "--ortho"]) == 0
    out = capsys.readouterr().out
    assert "EMIT_L2A_RFL_glt: emit L2 5 bands (wavelengths: EMIT sensor_band_parameters)" in out
    assert "PRS_L2D_STD_geo: prisma L2 4 bands (wavelengths: PRISMA List_Cw/List_Fwhm " \
           "attributes), gsd 30 m" in out
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    crs = {s["scene"]: s["crs"] for s in manifest["report"]["scenes"]}
    assert crs == {"EMIT_L2A_RFL_glt": "EPSG:4326", "PRS_L2D_STD_geo": "EPSG:32633"}
    emit_tiles = [t for t in manifest["tiles"] if t["key"].startswith("EMIT_L2A_RFL_glt_r")]
    assert emit_tiles and all(t["bounds"][0] >= -117.0 for t in emit_tiles)


def test_fine_tuning_inputs_accept_an_emit_ortho_scene_name(tmp_path):
    from specaware.data.reader import RasterReader
    from specaware.config import ConfigError
    from specaware.finetune.runner import _require_input

    path, cube, glt_x, glt_y = _emit_with_glt(tmp_path)
    name = f"EMIT-ORTHO:{path}"
    _require_input("data.image", name)
    with pytest.raises(ConfigError, match=r"'data.image': EMIT-ORTHO:.*gone\.nc not found"):
        _require_input("data.image", f"EMIT-ORTHO:{tmp_path / 'gone.nc'}")
    sample = RasterReader.open(name).read(0, 0, 5, 7)
    want = _expected(cube, glt_x, glt_y)
    np.testing.assert_array_equal(sample["valid"], ~np.isnan(want))


def test_glt_gather_reads_a_tilted_swath_block_by_block_not_its_bounding_box(monkeypatch):
    from specaware.data import cube_geo
    from specaware.data.cube_geo import Glt, Grid

    # a 400 x 100 swath turned by 45 degrees: swath (r, c) -> grid (r + c, r - c + 99)
    swath = np.arange(400 * 100, dtype=np.float32).reshape(1, 400, 100)
    r, c = np.indices((400, 100))
    rows, cols = np.full((499, 499), -1), np.full((499, 499), -1)
    rows[r + c, r - c + 99], cols[r + c, r - c + 99] = r, c
    glt = Glt.from_arrays(rows, cols, Grid())
    monkeypatch.setattr(cube_geo, "BLOCK", 32)
    reads = []

    def read(r: slice, c: slice) -> np.ndarray:
        reads.append((r.stop - r.start) * (c.stop - c.start))
        return swath[:, r, c]

    strip = glt.gather(read, slice(200, 264), slice(0, 499), np.nan)  # a full-width strip
    want = np.where(rows[200:264] >= 0, swath[0][rows[200:264], cols[200:264]], np.nan)
    np.testing.assert_array_equal(strip[0], want)
    # its bounding box in the swath is rows 100..263 x all 100 columns = 16400 pixels; each
    # 32 x 32 block of the grid needs at most 32 x 32 swath pixels
    assert max(reads) <= 32 * 32 < 16400 and len(reads) == 2 * 16


def test_glt_fill_values_are_empty_pixels_and_a_glt_past_the_swath_names_the_file(tmp_path):
    cube = np.clip(synthetic_cube(WL, 4, 3, seed=5), 0.001, None).astype(np.float32)
    glt_x = np.asarray([[1, 2, 3, -9999], [3, 2, 1, -9999]])   # -9999: a GLT _FillValue
    glt_y = np.asarray([[1, 1, 1, -9999], [4, 4, 4, -9999]])
    path = write_emit_nc(tmp_path / "EMIT_L2A_RFL_fill.nc", cube, wavelength=WL, fwhm=FWHM,
                         glt=(glt_x, glt_y))
    tile, last = iter_tiles(open_scene(cube_name(path, ortho=True)), 2)
    np.testing.assert_array_equal(tile.data[:, 0, :2], cube[:, 0, :2])
    np.testing.assert_array_equal(tile.data[:, 1, :2], cube[:, 3, 2:0:-1])
    assert last.col == 2 and last.nodata[:, :, 1].all() and not last.nodata[:, :, 0].any()
    bad = write_emit_nc(tmp_path / "EMIT_L2A_RFL_bad.nc", cube, wavelength=WL, fwhm=FWHM,
                        glt=(glt_x + 3, glt_y))
    with pytest.raises(ValueError, match=r"EMIT_L2A_RFL_bad\.nc: location/glt_x/glt_y name "
                                         r"swath pixels outside the 4 x 3 swath"):
        list(iter_tiles(open_scene(cube_name(bad, ortho=True)), 2))
