"""Per-tile descriptors: land-cover proxy on pure spectra for several band sets, entropy,
climate belts."""
import numpy as np
import pytest

from specaware.data.descriptors import climate_zone, histogram_entropy, tile_descriptors
from specaware.testing import _endmembers, sensor_bands


def _flat_tile(spectrum, size=8):
    return np.repeat(np.repeat(np.asarray(spectrum, np.float32)[:, None, None], size, 1), size, 2)


@pytest.mark.parametrize("sensor,max_bands", [("aviris-ng", None), ("sentinel-2a", None),
                                              ("landsat-8", None), ("desis", None),
                                              ("emit", 24)])
def test_pure_spectra_get_the_expected_landcover(sensor, max_bands):
    wl, _, _ = sensor_bands(sensor, max_bands)
    water, vegetation, soil = _endmembers(np.minimum(wl, 2500))
    grey = np.full(len(wl), 0.2, np.float32)  # spectrally flat, like concrete
    for spectrum, expected in [(water, "water"), (vegetation, "vegetation"), (soil, "bare"),
                               (grey, "built")]:
        tile = _flat_tile(spectrum)
        d = tile_descriptors(tile, np.ones(tile.shape, bool), wl)
        assert d["landcover"] == expected, (sensor, expected, d)
        assert d["landcover_fractions"][expected] == 1.0


def test_mixed_tile_reports_fractions_and_majority():
    wl, _, _ = sensor_bands("sentinel-2a")
    water, vegetation, _ = _endmembers(wl)
    tile = _flat_tile(vegetation)
    tile[:, :2] = water[:, None, None]  # 2 of 8 rows water
    d = tile_descriptors(tile, np.ones(tile.shape, bool), wl)
    assert d["landcover"] == "vegetation"
    assert d["landcover_fractions"]["water"] == pytest.approx(0.25)


def test_band_set_without_red_or_nir_is_unknown():
    wl = np.array([1500.0, 1600.0, 2200.0])
    d = tile_descriptors(np.full((3, 4, 4), 0.2, np.float32), np.ones((3, 4, 4), bool), wl)
    assert d["landcover"] == "unknown" and d["landcover_fractions"] == {}


def test_entropy_is_zero_for_constant_and_high_for_textured_tiles():
    valid = np.ones((4, 32, 32), bool)
    assert histogram_entropy(np.full((4, 32, 32), 0.3, np.float32), valid) == 0.0
    noise = np.random.default_rng(0).random((4, 32, 32)).astype(np.float32)
    assert histogram_entropy(noise, valid) > 5.5  # close to log2(64) = 6 for uniform noise
    assert histogram_entropy(noise, np.zeros_like(valid)) == 0.0


def test_invalid_pixels_are_ignored_by_descriptors():
    wl, _, _ = sensor_bands("sentinel-2a")
    tile = _flat_tile(_endmembers(wl)[1])
    valid = np.ones(tile.shape, bool)
    tile[:, :4] = 50.0
    valid[:, :4] = False
    d = tile_descriptors(tile, valid, wl)
    assert d["landcover"] == "vegetation" and d["mean_reflectance"] < 1.0


@pytest.mark.parametrize("lat,zone", [(0.0, "tropical"), (-30.0, "subtropical"),
                                      (37.0, "temperate"), (60.0, "boreal"), (-80.0, "polar"),
                                      (None, "unknown")])
def test_climate_zone_belts(lat, zone):
    assert climate_zone(lat) == zone
