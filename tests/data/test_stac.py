"""`specaware shard --stac`: a static STAC catalogue written to disk and served over HTTP on
127.0.0.1; items filtered by collection / bbox / datetime / max-items, wavelengths and FWHM from
`eo:bands` (the files carry none), per-band assets stacked, previews left out, and each tile's
descriptors naming its item, asset href and datetime."""
import json

import numpy as np
import pytest
import webdataset as wds
from rasterio.warp import transform_bounds

from specaware.cli import main as cli_main
from specaware.data.codec import decode_sample
from specaware.data.raster import open_scene
from specaware.data.stac import StacQuery, item_scene, matches, search
from specaware.testing import ORIGIN, UTM_11N, sensor_bands, synthetic_cube, write_geotiff
from specaware.testing_remote import eo_asset, http_server, stac_item, write_stac_catalog

pytestmark = pytest.mark.timeout(120)
WL, FWHM, _ = sensor_bands("enmap", 8)
S2 = {"B02": (492.7, 66.0), "B03": (559.8, 36.0), "B04": (664.6, 31.0), "B08": (832.8, 106.0)}


def _bbox(size=32, gsd=2.0):
    x0, y0 = ORIGIN
    return [round(v, 6) for v in transform_bounds(UTM_11N, "EPSG:4326", x0, y0 - size * gsd,
                                                  x0 + size * gsd, y0)]


@pytest.fixture
def catalog(tmp_path):
    root = tmp_path / "stac"
    (root / "data").mkdir(parents=True)
    cube = np.clip(synthetic_cube(WL, 32, 32, seed=2), 0.001, None)
    write_geotiff(root / "data" / "enmap-1.tif", cube, style=None)     # no wavelengths inside
    write_geotiff(root / "data" / "enmap-2.tif", cube, style=None)
    s2 = np.clip(synthetic_cube([w for w, _ in S2.values()], 32, 32, seed=4), 0.001, None)
    assets = {}
    for i, (name, (wl, fwhm)) in enumerate(S2.items()):
        write_geotiff(root / "data" / f"s2_{name}.tif", s2[i:i + 1], style=None)
        assets[name] = eo_asset(f"../data/s2_{name}.tif", [wl], [fwhm], [name])
    write_geotiff(root / "data" / "s2_visual.tif", s2[:3], style=None)
    assets["visual"] = eo_asset("../data/s2_visual.tif", [664.6, 559.8, 492.7], roles=["visual"])
    box = _bbox()
    far = [box[0] + 20, box[1], box[2] + 20, box[3]]
    return write_stac_catalog(root, {
        "enmap-l2a": [
            stac_item("enmap-1", "enmap-l2a", "2024-05-01T10:00:00Z", box,
                      {"reflectance": eo_asset("../data/enmap-1.tif", WL, FWHM)}),
            stac_item("enmap-2", "enmap-l2a", "2024-06-01T10:00:00Z", far,
                      {"reflectance": eo_asset("../data/enmap-2.tif", WL, FWHM)}),
            stac_item("enmap-3", "enmap-l2a", "2021-06-01T10:00:00Z", box,
                      {"reflectance": eo_asset("../data/enmap-1.tif", WL, FWHM)})],
        "sentinel-2-l2a": [stac_item("s2-1", "sentinel-2-l2a", "2023-07-01T10:00:00Z", box,
                                     assets)]})


def _tiles(out):
    manifest = json.loads((out / "manifest.json").read_text())
    urls = [str(out / s["name"]) for s in manifest["shards"]]
    return manifest, [decode_sample(s["npy"], s["json"])
                      for s in wds.WebDataset(urls, shardshuffle=False)]


def test_shard_stac_filters_items_and_records_provenance(catalog, tmp_path, capsys):
    box = _bbox()
    with http_server(catalog.parent) as server:
        rc = cli_main(["shard", "--stac", server.url("catalog.json"), "--collection",
                       "enmap-l2a", "--bbox=" + ",".join(map(str, box)), "--datetime",
                       "2024-01-01/2024-12-31", "--max-items", "5", "--tile", "16",
                       "--out", str(tmp_path / "out"), "--quiet"])
        asset_url = server.url("data/enmap-1.tif")
    assert rc == 0, capsys.readouterr().err
    manifest, samples = _tiles(tmp_path / "out")
    assert manifest["total"] == 4 and len(samples) == 4
    for row in manifest["tiles"]:
        assert row["descriptors"]["stac_item"] == "enmap-1"
        assert row["descriptors"]["stac_asset_href"] == asset_url
        assert row["descriptors"]["datetime"] == "2024-05-01T10:00:00Z"
    np.testing.assert_allclose(samples[0]["wavelength"], WL, rtol=1e-4)
    np.testing.assert_allclose(samples[0]["fwhm"], FWHM, rtol=1e-4)
    assert manifest["report"]["scenes"][0]["wavelength_source"] == "STAC eo:bands"


def test_per_band_assets_are_stacked_in_wavelength_order_without_previews(catalog):
    with http_server(catalog.parent) as server:
        items = search(server.url("catalog.json"), StacQuery(["sentinel-2-l2a"]))
        assert [i["id"] for i, _ in items] == ["s2-1"]
        vrt, provenance = item_scene(*items[0])
        scene = open_scene(vrt)
        assert scene.name == "s2-1" and scene.num_bands == 4
        np.testing.assert_allclose(scene.wavelength, [w for w, _ in S2.values()], rtol=1e-4)
        np.testing.assert_allclose(scene.fwhm, [f for _, f in S2.values()], rtol=1e-4)
        assert scene.band_names == list(S2)
        assert "s2_visual" not in provenance["stac_asset_href"]


def test_filters_by_collection_bbox_datetime_and_max_items(catalog):
    root = str(catalog)
    everything = search(root, StacQuery())
    assert sorted(i["id"] for i, _ in everything) == ["enmap-1", "enmap-2", "enmap-3", "s2-1"]
    box = tuple(_bbox())
    assert [i["id"] for i, _ in search(root, StacQuery(["enmap-l2a"], box))] == \
        ["enmap-1", "enmap-3"]
    assert [i["id"] for i, _ in search(root, StacQuery(datetime="2024-01-01/..",
                                                       collections=["enmap-l2a"]))] == \
        ["enmap-1", "enmap-2"]
    assert len(search(root, StacQuery(max_items=2))) == 2
    assert not matches({"properties": {"datetime": "2024-05-02T00:00:00Z"}},
                       StacQuery(datetime="2024-05-01"))


def test_stac_api_search_endpoint_is_queried(catalog, tmp_path):
    root = catalog.parent
    item = json.loads((root / "enmap-l2a" / "enmap-1.json").read_text())
    item["assets"]["reflectance"]["href"] = "./data/enmap-1.tif"
    (root / "search").write_text(json.dumps({"type": "FeatureCollection", "features": [item],
                                             "links": []}))
    (root / "api.json").write_text(json.dumps({"type": "Catalog", "id": "api", "links": [
        {"rel": "search", "href": "./search", "method": "GET"}]}))
    with http_server(root) as server:
        items = search(server.url("api.json"), StacQuery(["enmap-l2a"], max_items=3))
        assert [i["id"] for i, _ in items] == ["enmap-1"]
        assert server.requests["/search"] == 1
        vrt, _ = item_scene(*items[0])
        assert open_scene(vrt).num_bands == len(WL)


def test_item_without_spectral_assets_names_the_item(catalog, tmp_path, capsys):
    item = stac_item("bare", "x", "2024-01-01T00:00:00Z", _bbox(),
                     {"data": {"href": "data/enmap-1.tif", "roles": ["data"]}})
    with pytest.raises(ValueError, match=r"STAC item bare .*no asset has eo:bands"):
        item_scene(item, str(catalog))


def test_assets_readable_only_through_signed_urls_are_signed(catalog, tmp_path, capsys):
    """--stac-sign: each asset href goes through the signer (as Planetary Computer's
    /api/sas/v1/sign); an asset that refuses unsigned reads is read, the provenance keeps
    the unsigned href, and without the signer the asset's 403 names it."""
    box = _bbox()
    with http_server(catalog.parent) as server:
        server.faults["/data/enmap-1.tif"] = "signed"
        server.faults["/sign"] = "sign"
        args = ["shard", "--stac", server.url("catalog.json"), "--collection", "enmap-l2a",
                "--bbox=" + ",".join(map(str, box)), "--datetime", "2024-01-01/2024-12-31",
                "--tile", "16", "--quiet"]
        refused = cli_main([*args, "--out", str(tmp_path / "unsigned")])
        err = capsys.readouterr().err
        rc = cli_main([*args, "--stac-sign", server.url("sign"), "--out", str(tmp_path / "out")])
        asset_url = server.url("data/enmap-1.tif")
        signs = server.requests["/sign"]
    assert refused != 0 and "data/enmap-1.tif" in err and "403" in err
    assert rc == 0, capsys.readouterr().err
    manifest, samples = _tiles(tmp_path / "out")
    assert manifest["total"] == 4 and signs == 1
    assert {row["descriptors"]["stac_asset_href"] for row in manifest["tiles"]} == {asset_url}
    np.testing.assert_allclose(samples[0]["wavelength"], WL, rtol=1e-4)


def test_a_signer_that_fails_is_named_with_the_asset(catalog, tmp_path, capsys):
    with http_server(catalog.parent) as server:
        rc = cli_main(["shard", "--stac", server.url("catalog.json"), "--collection",
                       "enmap-l2a", "--datetime", "2024-05-01T00:00:00Z/2024-05-02T00:00:00Z",
                       "--stac-sign", server.url("no-signer-here"), "--tile", "16",
                       "--out", str(tmp_path / "out"), "--quiet"])
        signer = server.url("no-signer-here")
    err = capsys.readouterr().err
    assert rc != 0
    assert f"--stac-sign {signer}: could not sign" in err and "enmap-1.tif" in err


def _emit_item(tmp_path, assets: dict) -> None:
    """A catalogue of one EMIT item (no eo:bands: 285-band products list none) beside
    `catalog`'s files; its asset files are written into stac/data/."""
    from specaware.testing import write_emit_nc
    wl, fwhm, _ = sensor_bands("emit", 6)
    cube = np.clip(synthetic_cube(wl, 32, 32, seed=5), 0.001, None).astype(np.float32)
    for name in assets.values():
        write_emit_nc(tmp_path / "stac" / "data" / name, cube, wavelength=wl, fwhm=fwhm)
    write_stac_catalog(tmp_path / "stac", {"emit-l2a-rfl": [stac_item(
        "emit-1", "emit-l2a-rfl", "2024-03-01T18:00:00Z", _bbox(),
        {key: {"href": f"../data/{name}", "type": "application/x-netcdf", "roles": ["data"]}
         for key, name in assets.items()})]})
    return wl


def test_an_item_of_product_files_shards_through_the_product_reader(catalog, tmp_path,
                                                                    capsys):
    """EMIT items carry NetCDF assets without eo:bands: the one product asset is read by the
    EMIT reader (wavelengths from the file), with the item's provenance; with two product
    assets the item is refused until --stac-asset picks one."""
    wl = _emit_item(tmp_path, {"RFL": "EMIT_L2A_RFL_001.nc", "RFL_UNC": "EMIT_L2A_RFLUNCERT.nc"})
    with http_server(catalog.parent) as server:
        args = ["shard", "--stac", server.url("catalog.json"), "--collection", "emit-l2a-rfl",
                "--tile", "16", "--quiet"]
        ambiguous = cli_main([*args, "--out", str(tmp_path / "both")])
        err = capsys.readouterr().err
        rc = cli_main([*args, "--stac-asset", "RFL", "--out", str(tmp_path / "out")])
        asset_url = server.url("data/EMIT_L2A_RFL_001.nc")
    assert ambiguous != 0 and "several product assets ['RFL', 'RFL_UNC']" in err
    assert "--stac-asset KEY" in err
    assert rc == 0, capsys.readouterr().err
    manifest, samples = _tiles(tmp_path / "out")
    assert manifest["total"] == 4
    assert {r["descriptors"]["stac_item"] for r in manifest["tiles"]} == {"emit-1"}
    assert {r["descriptors"]["stac_asset_href"] for r in manifest["tiles"]} == {asset_url}
    assert manifest["report"]["scenes"][0]["wavelength_source"] == "EMIT sensor_band_parameters"
    np.testing.assert_allclose(samples[0]["wavelength"], wl, rtol=1e-5)
    assert samples[0]["sensor"] == "emit"


def test_a_signed_product_asset_is_still_read_by_the_product_reader(catalog, tmp_path,
                                                                   capsys):
    """A signer appends a query (?sig=...) to the asset URL; the product is still recognised
    by its path, so the EMIT reader (not GDAL's band-last view) reads it."""
    wl = _emit_item(tmp_path, {"RFL": "EMIT_L2A_RFL_001.nc"})
    with http_server(catalog.parent) as server:
        server.faults["/data/EMIT_L2A_RFL_001.nc"] = "signed"
        server.faults["/sign"] = "sign"
        rc = cli_main(["shard", "--stac", server.url("catalog.json"), "--collection",
                       "emit-l2a-rfl", "--stac-sign", server.url("sign"), "--tile", "16",
                       "--quiet", "--out", str(tmp_path / "out")])
    assert rc == 0, capsys.readouterr().err
    manifest, samples = _tiles(tmp_path / "out")
    assert manifest["report"]["scenes"][0]["wavelength_source"] == "EMIT sensor_band_parameters"
    np.testing.assert_allclose(samples[0]["wavelength"], wl, rtol=1e-5)


def test_a_stac_asset_key_the_item_lacks_is_named_with_its_keys(catalog):
    item = stac_item("emit-x", "x", "2024-01-01T00:00:00Z", _bbox(),
                     {"RFL": {"href": "data/a.nc", "roles": ["data"]}})
    with pytest.raises(ValueError, match=r"STAC item emit-x .*assets \['MASK'\] are not among "
                                         r"its assets \['RFL'\]"):
        item_scene(item, str(catalog), assets=["MASK"])
