"""Swath tiles (EMIT, PRISMA L1/L2B/L2C) carry no CRS, but their footprint comes from the file's
per-pixel latitude / longitude (data/cube_geo.py `swath_footprint`, h5_cubes.CubeDataset
`footprint`): bounds are the min / max of the tile's pixels, the centre latitude drives the
climate-zone descriptor, the antimeridian never gives a whole-globe box, a file without
geolocation still shards, and a remote file gets the same bounds. Files are generated."""
import json
import logging

import numpy as np
import pytest

from specaware.data.cube_geo import swath_footprint
from specaware.data.descriptors import climate_zone
from specaware.data.raster import open_scene
from specaware.data.shard import shard_scenes
from specaware.data.tiling import TilingOptions
from specaware.testing import sensor_bands, synthetic_cube, write_emit_nc, write_prisma_he5

h5py = pytest.importorskip("h5py")
WL, FWHM, _ = sensor_bands("emit", 6)
TILE = 8


def _tilted_latlon(shape, lat0: float, lon0: float):
    """(lat, lon) float64 [H, W] of a swath flown north-east at about 60 m, three fill pixels."""
    r, c = np.indices(shape)
    lat = lat0 - 0.0005 * r + 0.0002 * c
    lon = lon0 + 0.0006 * c + 0.0003 * r
    lat[0, 0] = lon[0, 0] = -9999.0       # fill: EMIT's _FillValue
    lat[9, 3], lon[12, 14] = np.nan, np.nan
    return lat, lon


def _expected(lat, lon, row, col):
    """[W, S, E, N] of the geolocated pixels of the tile at (row, col), computed directly."""
    la, lo = lat[row:row + TILE, col:col + TILE], lon[row:row + TILE, col:col + TILE]
    ok = np.isfinite(la) & np.isfinite(lo) & (la > -9999) & (lo > -9999)
    return [lo[ok].min(), la[ok].min(), lo[ok].max(), la[ok].max()]


def _emit(tmp_path, name="EMIT_L2A_RFL_swath", shape=(16, 16), latlon=None, **kwargs):
    cube = np.clip(synthetic_cube(WL, *shape, seed=7), 0.001, None).astype(np.float32)
    return write_emit_nc(tmp_path / f"{name}.nc", cube, wavelength=WL, fwhm=FWHM,
                         latlon=latlon, **kwargs)


def _shard(paths, out):
    manifest = shard_scenes(paths, out, options=TilingOptions(tile=TILE, max_invalid=1.0),
                            progress=False)  # keep every tile: the footprint is tested
    return manifest, {(t["scene"], t["row"], t["col"]): t for t in manifest["tiles"]}


def test_emit_swath_tile_bounds_are_the_min_max_of_its_pixels_lat_lon(tmp_path, capsys):
    from specaware.cli import main

    lat, lon = _tilted_latlon((16, 16), 37.0, -117.0)
    path = _emit(tmp_path, latlon=(lat, lon))
    manifest, tiles = _shard([path], tmp_path / "o")
    assert len(tiles) == 4 and manifest["report"]["scenes"][0]["crs"] is None
    for (_, row, col), tile in tiles.items():
        assert tile["bounds"] == pytest.approx(_expected(lat, lon, row, col), abs=1e-7)
        west, south, east, north = tile["bounds"]
        assert tile["descriptors"]["latitude"] == pytest.approx((south + north) / 2, abs=1e-5)
        assert tile["descriptors"]["climate_zone"] == "temperate"   # 37 N
    boxes = np.asarray([t["bounds"] for t in tiles.values()])
    assert manifest["bounds"] == pytest.approx([*boxes[:, :2].min(0), *boxes[:, 2:].max(0)])
    assert main(["inspect", str(tmp_path / "o")]) == 0
    shown = [float(v) for v in capsys.readouterr().out.split("bounds (lon/lat): ")[1]
             .splitlines()[0].split(", ")]
    assert shown == pytest.approx(manifest["bounds"], abs=1e-5)


def test_climate_zone_follows_the_swath_latitude(tmp_path):
    tropical = _emit(tmp_path, "EMIT_tropical", latlon=_tilted_latlon((16, 16), 10.0, 30.0))
    boreal = _emit(tmp_path, "EMIT_boreal", latlon=_tilted_latlon((16, 16), -60.0, 150.0))
    _, tiles = _shard([tropical, boreal], tmp_path / "o")
    zones = {(scene, t["descriptors"]["climate_zone"]) for (scene, _, _), t in tiles.items()}
    assert zones == {("EMIT_tropical", "tropical"), ("EMIT_boreal", "boreal")}
    lats = [t["descriptors"]["latitude"] for t in tiles.values()]
    assert all(climate_zone(v) != "unknown" for v in lats)


@pytest.mark.parametrize("level,names", [
    ("L1", ("Latitude_VNIR", "Longitude_VNIR")),
    ("L2B", ("Latitude", "Longitude")),
    ("L2C", ("Latitude", "Longitude"))])
def test_prisma_swath_tiles_take_bounds_from_their_geolocation_fields(tmp_path, level, names):
    rng = np.random.default_rng(1)
    vnir = rng.integers(1, 60000, (2, 16, 16), dtype=np.uint16)
    swir = rng.integers(1, 60000, (2, 16, 16), dtype=np.uint16)
    lat, lon = _tilted_latlon((16, 16), 45.0, 12.0)
    path = write_prisma_he5(tmp_path / f"PRS_{level}_STD_swath.he5", vnir, swir,
                            cw_vnir=[750.0, 500.0], fwhm_vnir=[10.0, 10.0],
                            cw_swir=[2200.0, 1600.0], fwhm_swir=[9.0, 9.0], level=level,
                            latlon=(lat, lon))
    group = f"HDFEOS/SWATHS/PRS_{level}_HCO/Geolocation Fields"
    with h5py.File(path, "a") as h5:
        assert all(f"{group}/{n}" in h5 for n in names)
        if level == "L1":  # a different SWIR pair: VNIR's (the co-registration reference) wins
            h5[f"{group}/Latitude_SWIR"][...] = 0.0
    _, tiles = _shard([path], tmp_path / "o")
    assert len(tiles) == 4
    for (_, row, col), tile in tiles.items():
        want = _expected(lat.astype(np.float32), lon.astype(np.float32), row, col)
        assert tile["bounds"] == pytest.approx(want, abs=1e-6)
        assert tile["descriptors"]["climate_zone"] == "temperate"


def test_prisma_l2d_without_a_projection_falls_back_to_its_geolocation_fields(tmp_path):
    rng = np.random.default_rng(2)
    vnir = rng.integers(1, 60000, (2, 8, 8), dtype=np.uint16)
    swir = rng.integers(1, 60000, (2, 8, 8), dtype=np.uint16)
    path = write_prisma_he5(tmp_path / "PRS_L2D_STD_noproj.he5", vnir, swir,
                            cw_vnir=[750.0, 500.0], fwhm_vnir=[10.0, 10.0],
                            cw_swir=[2200.0, 1600.0], fwhm_swir=[9.0, 9.0], epsg=None)
    manifest, tiles = _shard([path], tmp_path / "o")
    (tile,) = tiles.values()
    lat0, dlat, lon0, dlon = 45.0, -0.00027, 12.0, 0.00038  # the writer's default grid
    want = [lon0 + 0.5 * dlon, lat0 + 7.5 * dlat, lon0 + 7.5 * dlon, lat0 + 0.5 * dlat]
    assert manifest["report"]["scenes"][0]["crs"] is None
    assert tile["bounds"] == pytest.approx(want, abs=1e-5)


def test_a_swath_across_the_antimeridian_gets_west_above_east_not_the_globe(tmp_path):
    r, c = np.indices((8, 16))
    lon = 179.99 + 0.0012 * c            # 179.99 .. 180.008, stored as -180.. past 180
    lon = np.where(lon > 180.0, lon - 360.0, lon)
    lat = 60.0 - 0.0005 * r
    path = _emit(tmp_path, "EMIT_dateline", shape=(8, 16), latlon=(lat, lon))
    _, tiles = _shard([path], tmp_path / "o")
    west, south, east, north = tiles[("EMIT_dateline", 0, 8)]["bounds"]  # columns 8..15
    assert west == pytest.approx(179.9996) and east == pytest.approx(-179.992)
    assert (south, north) == pytest.approx((60.0 - 0.0035, 60.0))
    assert tiles[("EMIT_dateline", 0, 0)]["bounds"][::2] == pytest.approx([179.99, 179.9984])


def test_swath_footprint_rules_by_hand():
    # an ordinary box; 0..360 longitudes read as -180..180; fill and NaN ignored
    lat = np.asarray([[10.0, 10.5], [-9999.0, 11.0]])
    lon = np.asarray([[350.0, 351.0], [0.0, np.nan]])
    bounds, centre = swath_footprint(lat, lon)
    assert bounds == [-10.0, 10.0, -9.0, 10.5] and centre == 10.25
    # across the antimeridian: the shorter arc, west > east
    bounds, _ = swath_footprint(np.zeros(3), np.asarray([179.5, -179.5, 180.0]))
    assert bounds[::2] == [179.5, -179.5]
    # pixels all round a pole: every longitude, up to the pole
    lon = np.asarray([-170.0, -90.0, 0.0, 90.0, 170.0])
    bounds, centre = swath_footprint(np.full(5, 89.9), lon)
    assert bounds == [-180.0, 89.9, 180.0, 90.0] and centre == pytest.approx(89.95)
    assert swath_footprint(np.full(4, -9999.0), np.full(4, -9999.0)) == (None, None)


@pytest.mark.parametrize("product", ["emit", "prisma"])
def test_a_swath_without_geolocation_still_shards_with_one_note(tmp_path, caplog, product):
    if product == "emit":
        path = _emit(tmp_path, "EMIT_nogeo", geolocation=False)
    else:
        band = np.full((2, 16, 16), 30000, np.uint16)
        path = write_prisma_he5(tmp_path / "PRS_L2C_nogeo.he5", band, band,
                                cw_vnir=[750.0, 500.0], fwhm_vnir=[10.0, 10.0],
                                cw_swir=[2200.0, 1600.0], fwhm_swir=[9.0, 9.0], level="L2C",
                                geolocation=False)
    with caplog.at_level(logging.WARNING, logger="specaware.data.cube_geo"):
        manifest, tiles = _shard([path], tmp_path / "o")
    assert len(tiles) == 4 and manifest["bounds"] is None
    assert all(t["bounds"] is None and t["descriptors"]["climate_zone"] == "unknown"
               for t in tiles.values())
    notes = [r.getMessage() for r in caplog.records if "latitude/longitude" in r.getMessage()]
    assert len(notes) == 1 and path.name in notes[0] and "no bounds" in notes[0]
    assert ("location/lat + location/lon" if product == "emit" else "Latitude_VNIR") in notes[0]


def test_footprint_reads_only_the_tiles_window_of_lat_lon(tmp_path):
    from rasterio.windows import Window

    from specaware.data.remote import open_raster

    lat, lon = _tilted_latlon((16, 16), 37.0, -117.0)
    scene = open_scene(_emit(tmp_path, latlon=(lat, lon)))
    reads = []

    class Spy:
        def __init__(self, array):
            self.array = array

        def __getitem__(self, key):
            reads.append(key)
            return self.array[key]

    with open_raster(scene.path) as src:
        src._geo.lat, src._geo.lon = Spy(src._geo.lat), Spy(src._geo.lon)
        bounds, _ = src.footprint(Window(8, 0, 8, 8))
    assert reads == [(slice(0, 8, 1), slice(8, 16, 1))] * 2
    assert bounds == pytest.approx(_expected(lat, lon, 0, 8))


def test_a_remote_emit_file_gets_the_same_bounds_as_the_local_one(tmp_path, monkeypatch):
    from specaware.testing_remote import http_server

    monkeypatch.setenv("SPECAWARE_HTTP_RETRY_DELAY", "0.05")
    path = _emit(tmp_path, latlon=_tilted_latlon((16, 16), 37.0, -117.0))
    _, local = _shard([path], tmp_path / "local")
    with http_server(tmp_path) as server:
        _, remote = _shard([server.url(path.name)], tmp_path / "remote")
        assert server.gets[f"/{path.name}"] > 0
    assert sorted(remote) == sorted(local)
    for key, tile in local.items():
        assert tile["bounds"] is not None and remote[key]["bounds"] == tile["bounds"]
        assert remote[key]["descriptors"]["latitude"] == tile["descriptors"]["latitude"]
    written = json.loads((tmp_path / "remote" / "manifest.json").read_text())
    assert written["bounds"] == pytest.approx(json.loads(
        (tmp_path / "local" / "manifest.json").read_text())["bounds"])
