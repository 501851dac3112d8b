"""Clients that differ: Dirichlet label skew, each client's sensor, splits, config checks."""
import numpy as np
import pytest

from specaware.config import ConfigError, build
from specaware.federated.config import ClientSpec, FederatedConfig, validate
from specaware.federated.data import SPLITS, SourceTiles
from specaware.federated.partition import dirichlet_partition, render_client, split_client
from specaware.sensors import get_sensor
from specaware.testing import synthetic_cube


def _labels(n_per_class=40, classes=5):
    return np.repeat(np.arange(classes), n_per_class)


def _skew(parts, label):
    """Mean over clients of the largest class share: 1/K for IID, 1 when one class each."""
    return float(np.mean([np.bincount(label[p]).max() / len(p) for p in parts]))


def test_every_tile_goes_to_exactly_one_client():
    label = _labels()
    parts = dirichlet_partition(label, 4, alpha=0.5, seed=0)
    joined = np.sort(np.concatenate(parts))
    np.testing.assert_array_equal(joined, np.arange(len(label)))


def test_small_alpha_skews_labels_more_than_large_alpha():
    label = _labels()
    skewed = np.mean([_skew(dirichlet_partition(label, 4, 0.1, s), label) for s in range(5)])
    mild = np.mean([_skew(dirichlet_partition(label, 4, 100.0, s), label) for s in range(5)])
    iid = _skew(dirichlet_partition(label, 4, 0.0, 0), label)
    assert skewed > mild + 0.2
    assert iid == pytest.approx(0.2, abs=0.05)        # 5 classes dealt uniformly


def test_impossible_partition_names_the_key_and_fix():
    with pytest.raises(ValueError, match="data.alpha"):
        dirichlet_partition(np.zeros(10, int), 4, alpha=0.5, seed=0)


def test_splits_are_per_class_shares():
    split = split_client(_labels(20, 2), val=0.2, holdout=0.3, seed=0)
    for k in range(2):
        part = split[k * 20:(k + 1) * 20]
        assert (part == SPLITS["holdout"]).sum() == 6 and (part == SPLITS["val"]).sum() == 4


@pytest.fixture(scope="module")
def source():
    s = get_sensor("aviris-ng")
    cubes = np.stack([synthetic_cube(s.wavelength, 8, 8, seed=i) for i in range(4)])
    return SourceTiles(cubes, np.ones(cubes.shape, bool), np.array([0, 1, 0, 1]),
                       s.wavelength, s.fwhm, 5.0, s.name, ["a", "b"])


def test_each_client_sees_its_tiles_through_its_own_sensor(source):
    split = np.zeros(4, np.uint8)
    s2 = render_client(source, np.arange(4), ClientSpec("sentinel-2a"), "s2", split)
    landsat = render_client(source, np.arange(4), ClientSpec("landsat-8"), "l8", split)
    assert s2.sensor == "sentinel-2a" and landsat.sensor == "landsat-8"
    assert s2.image.shape[1] == len(s2.wavelength) > 8
    assert landsat.image.shape[1] == len(landsat.wavelength) < s2.image.shape[1]
    # a band near 865 nm of both sensors sees the same ground: similar reflectance
    i, j = np.abs(s2.wavelength - 865).argmin(), np.abs(landsat.wavelength - 865).argmin()
    np.testing.assert_allclose(s2.image[:, i], landsat.image[:, j], atol=0.02)


def test_a_client_may_hold_a_band_set_nobody_else_has(source):
    swir = render_client(source, np.arange(4), ClientSpec("enmap", [1000, 2500]), "swir",
                         np.zeros(4, np.uint8))
    assert swir.wavelength.min() >= 1000 and swir.image.shape[1] == len(swir.wavelength)
    with pytest.raises(ValueError, match="bands"):
        render_client(source, np.arange(4), ClientSpec("enmap", [100, 200]), "x",
                      np.zeros(4, np.uint8))


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="strategies"):
        validate(build(FederatedConfig, [], ["strategies=[fedprox]"]))
    with pytest.raises(ConfigError, match="clients"):
        validate(FederatedConfig(clients=[ClientSpec("enmap")]))
    with pytest.raises(ConfigError, match="clients\\[1\\].sensor.*Did you mean 'enmap'"):
        validate(build(FederatedConfig, [], ["clients=[{sensor: landsat-8}, {sensor: enmapp}]"]))
    with pytest.raises(ConfigError, match="clients\\[0\\].bands"):
        validate(build(FederatedConfig, [], ["clients=[{sensor: enmap, bands: [1]}, "
                                             "{sensor: landsat-8}]"]))


def test_shipped_configs_build():
    for name in ("federated/quick.yaml", "federated/three_sensors.yaml"):
        cfg = validate(build(FederatedConfig, [name]))
        assert len(cfg.clients) >= 3


def test_scene_tiles_are_read_from_rasters_with_their_labels(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    from specaware.federated.config import DataConfig
    from specaware.federated.data import source_tiles
    from specaware.testing import write_geotiff
    s = get_sensor("enmap")
    image = write_geotiff(tmp_path / "scene.tif", synthetic_cube(s.wavelength[:20], 32, 32),
                          wavelength=s.wavelength[:20], fwhm=s.fwhm[:20])
    labels = np.zeros((32, 32), np.uint8)
    labels[:, 16:] = 1
    labels[:16, :16] = 255                                       # unlabelled quarter
    with rasterio.open(tmp_path / "labels.tif", "w", driver="GTiff", width=32, height=32,
                       count=1, dtype="uint8", transform=from_origin(0, 32, 1, 1)) as dst:
        dst.write(labels, 1)
    tiles = source_tiles([(image, tmp_path / "labels.tif")],
                         DataConfig(tile=16, min_tiles_per_class=1))
    assert tiles.image.shape == (3, 20, 16, 16)                  # the unlabelled tile is skipped
    assert sorted(tiles.label.tolist()) == [0, 1, 1]
    np.testing.assert_allclose(tiles.wavelength, s.wavelength[:20], rtol=1e-5)


def test_missing_inputs_are_config_errors_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="model.checkpoint.*nope.safetensors"):
        validate(build(FederatedConfig, [], [f"model.checkpoint={tmp_path}/nope.safetensors"]))
    with pytest.raises(ConfigError, match="data.images"):
        validate(build(FederatedConfig, [], ["data.kind=scenes", f"data.images=[{tmp_path}/a.tif]",
                                             f"data.labels=[{tmp_path}/b.tif]"]))
