"""Tiling scenes into shards: invalid marking, invalid-fraction filtering, absorption bands,
manifest contents, georeferencing, descriptors, re-run behaviour, workers, and the CLI."""
import json

import numpy as np
import pytest
import webdataset as wds

from specaware.cli import main as cli_main
from specaware.data.codec import decode_sample
from specaware.data.shard import ShardSetExistsError, read_manifest, shard_scenes
from specaware.data.tiling import TilingOptions
from specaware.sensors import get_sensor
from specaware.testing import sensor_bands, synthetic_cube, write_envi, write_geotiff

WL, FWHM, _ = sensor_bands("aviris-ng", 30)


def _decoded(out_dir):
    manifest = read_manifest(out_dir)
    urls = [str(out_dir / s["name"]) for s in manifest["shards"]]
    return {s["__key__"]: decode_sample(s["npy"], s["json"])
            for s in wds.WebDataset(urls, shardshuffle=False)}


def _scene(tmp_path, name="scene", height=32, width=32, **kw):
    cube = np.clip(synthetic_cube(WL, height, width, seed=3), 0.001, None)
    kw.setdefault("nodata", -9999.0)
    return cube, write_envi(tmp_path / f"{name}.img", cube, wavelength=WL, fwhm=FWHM, **kw)


def test_tiles_above_the_invalid_fraction_are_dropped_and_counted(tmp_path):
    cube = np.clip(synthetic_cube(WL, 32, 32), 0.001, None)
    cube[:, :16, :16][:, :6] = -9999.0     # top-left tile: 6/16 rows = 37.5% nodata
    cube[:, :16, 16:][:, :2] = -9999.0     # top-right tile: 12.5% nodata
    path = write_envi(tmp_path / "s.img", cube, wavelength=WL, fwhm=FWHM, nodata=-9999.0)
    manifest = shard_scenes([path], tmp_path / "a", options=TilingOptions(tile=16),
                            progress=False)
    report = manifest["report"]
    assert (report["tiles_seen"], report["tiles_kept"], report["dropped_invalid"]) == (4, 3, 1)
    keys = [t["key"] for t in manifest["tiles"]]
    assert "s_r000000_c000000" not in keys and "s_r000000_c000016" in keys
    assert manifest["tiles"][0]["invalid_fraction"] == pytest.approx(0.125)
    loose = shard_scenes([path], tmp_path / "b", progress=False,
                         options=TilingOptions(tile=16, max_invalid=0.5))
    assert loose["total"] == 4


def test_invalid_values_and_absorption_bands_are_marked_zeroed_and_restored(tmp_path):
    cube = np.clip(synthetic_cube(WL, 16, 16), 0.001, None)
    cube[2, 0, 0] = np.nan          # non-finite
    cube[3, 0, 1] = -0.2            # negative
    cube[4, 0, 2] = 1.8             # above the L2 cap of 1.5
    cube[5, 0, 3] = -9999.0         # nodata
    path = write_envi(tmp_path / "s.img", cube, wavelength=WL, fwhm=FWHM, nodata=-9999.0)
    shard_scenes([path], tmp_path / "out", options=TilingOptions(tile=16, dtype="int16"),
                 progress=False, sensor="aviris-ng")
    (sample,) = _decoded(tmp_path / "out").values()
    bad = [(2, 0, 0), (3, 0, 1), (4, 0, 2), (5, 0, 3)]
    for c, y, x in bad:
        assert not sample["valid"][c, y, x] and sample["image"][c, y, x] == 0
    absorbed = get_sensor("aviris-ng").absorption_mask()[
        np.searchsorted(get_sensor("aviris-ng").wavelength, WL)]
    assert absorbed.sum() >= 3
    assert not sample["valid"][absorbed].any() and np.all(sample["image"][absorbed] == 0)
    expected = np.ones_like(sample["valid"])
    expected[absorbed] = False
    for c, y, x in bad:
        expected[c, y, x] = False
    np.testing.assert_array_equal(sample["valid"], expected)
    np.testing.assert_allclose(sample["image"][expected], cube[expected], atol=6e-5)


def test_manifest_lists_shards_counts_sensors_bounds_and_descriptors(tmp_path):
    _, a = _scene(tmp_path, "flight_a", 32, 48)
    wl2, fwhm2, _ = sensor_bands("sentinel-2a")
    b = write_geotiff(tmp_path / "s2.tif", np.clip(synthetic_cube(wl2, 16, 32), 0, None),
                      style=None, tags={"SPECAWARE_REGION": "sierra", "SPECAWARE_YEAR": "2021"})
    table = tmp_path / "desc.json"
    table.write_text(json.dumps({"*": {"campaign": "test"}, "flight_a": {"region": "mojave"}}))
    from specaware.cli.shard import _load_descriptors
    manifest = shard_scenes([a, b], tmp_path / "out", options=TilingOptions(tile=16),
                            shard_size=4, progress=False, sensor="sentinel-2a",
                            descriptors=_load_descriptors(table))
    assert manifest["total"] == 8 and [s["count"] for s in manifest["shards"]] == [4, 4]
    assert manifest["sensors"] == {"sentinel-2a": {"count": 8, "bands": [30, 13]}}
    assert manifest["band_counts"] == {"30": 6, "13": 2}
    west, south, east, north = manifest["bounds"]
    assert -117.01 < west < east < -116.99 and 37.0 < south < north < 37.05
    rows = {t["key"]: t for t in manifest["tiles"]}
    first = rows["flight_a_r000000_c000000"]
    assert first["shard"] == "shard-000000.tar" and first["bands"] == 30
    d = first["descriptors"]
    assert d["region"] == "mojave" and d["campaign"] == "test"
    assert d["landcover"] in ("water", "vegetation", "bare", "built")
    assert d["climate_zone"] == "temperate" and 37.0 < d["latitude"] < 37.05
    assert d["entropy"] > 1.0 and 0.0 < d["mean_reflectance"] < 0.6
    s2 = rows["s2_r000000_c000016"]["descriptors"]
    assert (s2["region"], s2["year"], s2["campaign"]) == ("sierra", 2021, "test")
    scenes = {s["scene"]: s for s in manifest["report"]["scenes"]}
    assert scenes["s2"]["wavelength_source"] == "sensor catalogue (sentinel-2a)"
    assert scenes["flight_a"]["wavelength_source"] == "envi header"


def test_tile_georeferencing_and_metadata_travel_with_the_sample(tmp_path):
    _, path = _scene(tmp_path, "geo", 32, 32)
    shard_scenes([path], tmp_path / "out", options=TilingOptions(tile=16), progress=False)
    sample = _decoded(tmp_path / "out")["geo_r000016_c000000"]
    assert sample["meta"]["transform"] == [2.0, 0.0, 500000.0, 0.0, -2.0, 4100000.0 - 32.0]
    assert sample["meta"]["crs"] == "EPSG:32611" and sample["meta"]["scene"] == "geo"
    assert sample["gsd"] == 2.0 and sample["level"] == "L2" and sample["sensor"] == "unknown"
    np.testing.assert_allclose(sample["wavelength"], WL, atol=1e-3)


def test_rerun_refuses_then_overwrite_replaces(tmp_path):
    _, path = _scene(tmp_path)
    opts = TilingOptions(tile=16)
    shard_scenes([path], tmp_path / "out", options=opts, progress=False)
    before = (tmp_path / "out" / "shard-000000.tar").read_bytes()
    with pytest.raises(ShardSetExistsError, match="--overwrite"):
        shard_scenes([path], tmp_path / "out", options=opts, progress=False)
    assert (tmp_path / "out" / "shard-000000.tar").read_bytes() == before
    manifest = shard_scenes([path], tmp_path / "out", options=TilingOptions(tile=8),
                            progress=False, overwrite=True)
    assert manifest["total"] == 16 and manifest["tile"] == 8


def test_bad_scene_fails_before_anything_is_written(tmp_path):
    _, good = _scene(tmp_path, "good")
    bare = write_envi(tmp_path / "bare.img", np.zeros((3, 16, 16), np.float32))
    with pytest.raises(ValueError, match=r"bare\.img: no wavelengths"):
        shard_scenes([good, bare], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_worker_processes_give_identical_shards(tmp_path):
    _, path = _scene(tmp_path, "w", 48, 32)
    opts = TilingOptions(tile=16)
    shard_scenes([path], tmp_path / "serial", options=opts, progress=False)
    shard_scenes([path], tmp_path / "pool", options=opts, progress=False, workers=2)
    a = (tmp_path / "serial" / "shard-000000.tar").read_bytes()
    assert a == (tmp_path / "pool" / "shard-000000.tar").read_bytes()


def test_cli_shards_and_reports(tmp_path, capsys):
    cube, path = _scene(tmp_path, "cli", 32, 32)
    out = tmp_path / "out"
    rc = cli_main(["shard", str(path), "--out", str(out), "--tile", "16", "--dtype", "int16",
                   "--shard-size", "3", "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "wrote 4 tiles in 2 shards" in text and "kept 4 of 4 tiles" in text
    assert "cli: unknown L2 30 bands (wavelengths: envi header), gsd 2 m" in text
    assert cli_main(["shard", str(path), "--out", str(out), "--quiet"]) == 2
    assert "already holds a shard set" in capsys.readouterr().err
    assert cli_main(["shard", str(tmp_path / "nope.tif"), "--out", str(out)]) == 2
    assert "scene not found" in capsys.readouterr().err
    assert cli_main(["shard", str(path), "--out", str(tmp_path / "o2"), "--sensor", "foo"]) == 2
    assert "unknown sensor 'foo'" in capsys.readouterr().err


def test_cli_fails_saying_why_when_every_tile_is_invalid(tmp_path, capsys):
    cube = synthetic_cube(WL, 16, 16) * 5000  # integer-scaled reflectance read as L2
    path = write_envi(tmp_path / "dn.img", cube, wavelength=WL, fwhm=FWHM)
    assert cli_main(["shard", str(path), "--out", str(tmp_path / "o"), "--tile", "16",
                     "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "--scale (e.g. 0.0001" in err and "wrote no tile" in err


def test_caps_follow_the_level_and_spare_thermal_bands(tmp_path):
    wl, fwhm, names = sensor_bands("landsat-8")
    cube = np.clip(synthetic_cube(np.minimum(wl, 2500), 16, 16), 0.01, None)
    thermal = wl > 3000
    cube[thermal] = 295.0  # brightness temperature in kelvin
    path = write_geotiff(tmp_path / "l8.tif", cube, style=None, band_names=names)
    shard_scenes([path], tmp_path / "l2", options=TilingOptions(tile=16), progress=False,
                 sensor="landsat-8")
    (sample,) = _decoded(tmp_path / "l2").values()
    assert sample["valid"][thermal].all()
    np.testing.assert_allclose(sample["image"][thermal], 295.0)
    radiance = np.clip(synthetic_cube(WL, 16, 16), 0.01, None) * 100  # up to ~60 uW/cm2/sr/nm
    radiance[0, 0, 0] = 150.0
    rpath = write_envi(tmp_path / "rad.img", radiance, wavelength=WL, fwhm=FWHM)
    shard_scenes([rpath], tmp_path / "l1", options=TilingOptions(tile=16), progress=False,
                 sensor="aviris-ng", level="L1")
    (sample,) = _decoded(tmp_path / "l1").values()
    assert sample["level"] == "L1" and not sample["valid"][0, 0, 0]
    assert sample["valid"][1:, 0, 0][~np.isin(np.arange(1, 30), np.flatnonzero(
        ~_signal_bands()) )].all()


def _signal_bands():
    from specaware.sensors import absorption_mask
    return ~absorption_mask(WL, get_sensor("aviris-ng").absorption_ranges)


def test_scene_smaller_than_a_tile_is_reported_not_fatal(tmp_path, capsys):
    _, small = _scene(tmp_path, "small", 12, 40)
    _, big = _scene(tmp_path, "big", 16, 16)
    assert cli_main(["shard", str(small), str(big), "--out", str(tmp_path / "o"), "--tile", "16",
                     "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "wrote 1 tiles" in captured.out
    assert "small (40x12) is smaller than one tile" in captured.err
    assert read_manifest(tmp_path / "o")["report"]["scenes_too_small"] == ["small"]


@pytest.mark.parametrize("boxes, expected", [
    # one region: the plain box
    ([[-117.2, 36.9, -117.0, 37.0], [-117.1, 37.0, -116.9, 37.1]], [-117.2, 36.9, -116.9, 37.1]),
    # tiles on both sides of 180 degrees (and one crossing it): a box that crosses it too
    ([[179.98, 59.99, 179.99, 60.0], [179.99, 59.99, -179.99, 60.0],
      [-179.99, 59.98, -179.98, 59.99]], [179.98, 59.98, -179.98, 60.0]),
    # Alaska and Kamchatka: 50 degrees across the antimeridian, not 310 round the globe
    ([[-150.0, 60.0, -140.0, 61.0], [160.0, 55.0, 170.0, 56.0]], [160.0, 55.0, -140.0, 61.0]),
    # boxes that leave no longitude uncovered
    ([[-180.0, -10.0, 0.0, 10.0], [0.0, -5.0, 180.0, 5.0]], [-180.0, -10.0, 180.0, 10.0]),
])
def test_manifest_bounds_hold_every_tile_the_short_way_round(boxes, expected):
    from specaware.data.shard import build_manifest
    rows = [{"key": f"k{i}", "bounds": b} for i, b in enumerate(boxes)] + [{"key": "nogeo"}]
    assert build_manifest([], rows)["bounds"] == pytest.approx(expected)
