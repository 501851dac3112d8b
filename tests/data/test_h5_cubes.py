"""EMIT L2A and PRISMA HE5 cubes are read band axis first with the product's own wavelengths
(data/h5_cubes.py): tiles equal the source array, fill values are nodata, PRISMA's flagged
bands are dropped and its bands come out in ascending wavelength with DN scaled to reflectance;
`specaware shard` recognises both. Files are written here with the products' group / variable
/ attribute layout (h5py); no real EMIT or PRISMA file is available to test against."""
import numpy as np
import pytest

from specaware.data.products import as_scene
from specaware.data.raster import iter_tiles, open_scene
from specaware.data.shard import shard_scenes
from specaware.data.stream import make_loader
from specaware.data.tiling import TilingOptions
from specaware.testing import sensor_bands, synthetic_cube, write_emit_nc, write_prisma_he5

h5py = pytest.importorskip("h5py")
WL, FWHM, _ = sensor_bands("emit", 6)


def _emit(tmp_path, height=20, width=24):
    cube = np.clip(synthetic_cube(WL, height, width, seed=3), 0.001, None).astype(np.float32)
    cube[:, 0, :3] = np.nan  # pixels outside the swath: written as the -9999 fill
    return write_emit_nc(tmp_path / "EMIT_L2A_RFL_test.nc", cube, wavelength=WL, fwhm=FWHM), cube


def test_emit_cube_is_read_bands_first_with_its_wavelengths_and_fill(tmp_path):
    path, cube = _emit(tmp_path)
    scene = open_scene(path)
    np.testing.assert_allclose(scene.wavelength, WL, rtol=1e-6)
    np.testing.assert_allclose(scene.fwhm, FWHM, rtol=1e-6)
    assert (scene.sensor, scene.level, scene.gsd) == ("emit", "L2", 60.0)
    assert (scene.num_bands, scene.height, scene.width) == (6, 20, 24)
    assert scene.nodata == [-9999.0] * 6
    tiles = list(iter_tiles(scene, 8))
    assert [(t.row, t.col) for t in tiles] == [(r, c) for r in (0, 8, 12) for c in (0, 8, 16)]
    for tile in tiles:
        want = cube[:, tile.row:tile.row + 8, tile.col:tile.col + 8]
        np.testing.assert_array_equal(tile.nodata, np.isnan(want))
        np.testing.assert_array_equal(tile.data[~tile.nodata], want[~np.isnan(want)])


def _prisma(tmp_path):
    rng = np.random.default_rng(0)
    # cube band order as the products list it: longest wavelength first; one band has no data
    cw_vnir, cw_swir = [980.0, 750.0, 0.0, 500.0], [2200.0, 1600.0, 960.0]
    vnir = rng.integers(1, 60000, (4, 10, 12), dtype=np.uint16)
    swir = rng.integers(1, 60000, (3, 10, 12), dtype=np.uint16)
    path = write_prisma_he5(tmp_path / "PRS_L2D_STD_test.he5", vnir, swir, cw_vnir=cw_vnir,
                            fwhm_vnir=[12.0, 11.0, 0.0, 10.0], cw_swir=cw_swir,
                            fwhm_swir=[9.0, 8.0, 13.0], scale=((0.0, 1.0), (-0.1, 0.9)))
    return path, vnir, swir


def test_prisma_cubes_are_stacked_in_wavelength_order_scaled_without_flagged_bands(tmp_path):
    path, vnir, swir = _prisma(tmp_path)
    scene = open_scene(path)
    np.testing.assert_allclose(scene.wavelength, [500, 750, 960, 980, 1600, 2200])
    np.testing.assert_allclose(scene.fwhm, [10, 11, 13, 12, 8, 9])
    assert (scene.sensor, scene.level, scene.gsd, scene.crs) == ("prisma", "L2", 30.0, "EPSG:32633")
    # source band of each scene band, and the L2 scaling min + DN * (max - min) / 65535
    source = [vnir[3], vnir[1], swir[2], vnir[0], swir[1], swir[0]]
    low_high = [(0.0, 1.0)] * 2 + [(-0.1, 0.9)] + [(0.0, 1.0)] + [(-0.1, 0.9)] * 2
    (tile,) = [t for t in iter_tiles(scene, 6) if (t.row, t.col) == (4, 6)]
    for band, (dn, (low, high)) in enumerate(zip(source, low_high)):
        want = np.float32(low) + dn[4:10, 6:12].astype(np.float32) * \
            np.float32((np.float32(high) - np.float32(low)) / 65535.0)
        np.testing.assert_allclose(tile.data[band], want, rtol=1e-6, atol=1e-7)
    assert not tile.nodata.any()


def test_specaware_shard_recognises_both_products(tmp_path):
    emit, cube = _emit(tmp_path)
    prisma, _, _ = _prisma(tmp_path)
    assert as_scene(emit) == f"EMIT:{emit}" and as_scene(prisma) == f"PRISMA:{prisma}"
    manifest = shard_scenes([emit, prisma], tmp_path / "o", options=TilingOptions(tile=8),
                            progress=False)
    assert manifest["sensors"]["emit"]["bands"] == [6]
    assert manifest["sensors"]["prisma"]["bands"] == [6]
    samples = {}
    for batch in make_loader(tmp_path / "o", mode="eval", batch_size=4, num_workers=0):
        for i, meta in enumerate(batch["meta"]):
            samples[meta["key"]] = (batch["image"][i].numpy(), batch["wavelength"][i].numpy(),
                                    meta, batch["valid"][i].numpy())
    emit_tiles = {k: v for k, v in samples.items() if v[2]["scene"] == "EMIT_L2A_RFL_test"}
    assert len(emit_tiles) == 9
    image, wavelength, _, valid = emit_tiles["EMIT_L2A_RFL_test_r000008_c000016"]
    np.testing.assert_allclose(wavelength[:6], WL, rtol=1e-6)
    valid = valid[:6]  # the catalogue's absorption bands are masked, the others all valid
    assert valid[:5].all()
    np.testing.assert_allclose(image[:6][valid], cube[:, 8:16, 16:24][valid], rtol=2e-3)


def test_a_prisma_file_whose_centres_do_not_match_its_cube_names_file_and_attribute(tmp_path):
    path, _, _ = _prisma(tmp_path)
    with h5py.File(path, "a") as h5:
        h5.attrs["List_Cw_Swir"] = np.asarray([2200.0, 1600.0], np.float32)
    with pytest.raises(ValueError, match=r"PRS_L2D_STD_test\.he5: attribute List_Cw_Swir lists "
                                         r"2 centres but .*SWIR_Cube has 3 bands"):
        open_scene(path)


def test_remote_emit_over_http_and_prisma_over_s3_read_in_place(tmp_path, monkeypatch):
    from specaware.testing_remote import http_server, s3_client, s3_server

    monkeypatch.setenv("SPECAWARE_HTTP_RETRY_DELAY", "0.05")
    path, cube = _emit(tmp_path, height=64, width=64)
    local = [(t.row, t.col, t.data.copy()) for t in iter_tiles(open_scene(path), 16)]
    with http_server(tmp_path) as server:
        url = server.url(path.name)
        scene = open_scene(url)
        remote = [(t.row, t.col, t.data) for t in iter_tiles(scene, 16)]
        with pytest.raises(OSError, match=r"gone\.nc: not found \(HTTP 404\); check the URL"):
            open_scene(server.url("gone.nc"))
    assert scene.sensor == "emit" and scene.path == f"EMIT:{url}"
    np.testing.assert_allclose(scene.wavelength, WL, rtol=1e-6)
    assert len(remote) == len(local) == 16
    for (r, c, got), (r2, c2, want) in zip(remote, local):
        assert (r, c) == (r2, c2)
        np.testing.assert_array_equal(got, want)
    prisma, vnir, _ = _prisma(tmp_path)
    with s3_server():
        client = s3_client()
        client.create_bucket(Bucket="scenes")
        client.upload_file(str(prisma), "scenes", f"prisma/{prisma.name}")
        scene = open_scene(f"s3://scenes/prisma/{prisma.name}")
        (tile,) = [t for t in iter_tiles(scene, 10) if (t.row, t.col) == (0, 2)]
    np.testing.assert_allclose(scene.wavelength, [500, 750, 960, 980, 1600, 2200])
    np.testing.assert_allclose(tile.data[0], vnir[3][:, 2:12] / np.float32(65535.0), rtol=1e-6)


def test_fine_tune_reader_reads_emit_windows_and_decimates_it_like_gdal(tmp_path):
    from specaware.data.reader import RasterReader, read_decimated

    path, cube = _emit(tmp_path, height=20, width=24)
    decimated = read_decimated(open_scene(path), side=10)  # step 2: every other pixel
    np.testing.assert_array_equal(np.isnan(decimated), np.isnan(cube[:, ::2, ::2]))
    np.testing.assert_array_equal(decimated[~np.isnan(decimated)],
                                  cube[:, ::2, ::2][~np.isnan(cube[:, ::2, ::2])])
    reader = RasterReader.open(path)
    sample = reader.read(0, 0, 8, 8)
    assert sample["sensor"] == "emit" and sample["image"].shape == (6, 8, 8)
    np.testing.assert_allclose(sample["wavelength"], WL, rtol=1e-6)
    np.testing.assert_array_equal(sample["valid"], ~np.isnan(cube[:, :8, :8]))
