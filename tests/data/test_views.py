"""Views: spatial augmentations are consistent, spectral views keep metadata aligned, sensor
simulation is a response-weighted average that respects invalid pixels."""
import numpy as np
import pytest

from specaware.data.normalize import NormalizeConfig, normalize_sample
from specaware.data.views import (ViewConfig, apply_views, crop, flip_rotate, simulate_sensor,
                                  spectral_view)
from specaware.sensors import get_sensor


def _cube_sample(c=6, h=8, w=10, key="t"):
    image = np.arange(c * h * w, dtype=np.float32).reshape(c, h, w)
    valid = (image % 7) != 0
    wl = np.linspace(450, 2300, c).astype(np.float32)
    return {"image": image, "valid": valid, "wavelength": wl, "fwhm": np.full(c, 10, np.float32),
            "gsd": 2.0, "sensor": "aviris-ng", "level": "L2",
            "meta": {"key": key, "transform": [2.0, 0.0, 1000.0, 0.0, -2.0, 5000.0]},
            "label": (np.arange(h * w).reshape(h, w) % 5)}


def _world(transform, row, col):
    """World coordinate of the centre of pixel (row, col) under a rasterio-ordered affine."""
    a, b, c, d, e, f = transform
    x, y = col + 0.5, row + 0.5
    return a * x + b * y + c, d * x + e * y + f


@pytest.mark.parametrize("flip_h,flip_v,k", [(False, False, 1), (True, False, 0), (False, True, 3),
                                             (True, True, 2), (True, False, 1)])
def test_flips_and_rotations_move_pixels_and_georeference_together(flip_h, flip_v, k):
    src = _cube_sample()
    out = flip_rotate(crop(src, 1, 2, 6), flip_h, flip_v, k)
    old_t, new_t = src["meta"]["transform"], out["meta"]["transform"]
    for row in range(6):
        for col in range(6):
            value = out["image"][0, row, col]
            old_row, old_col = np.argwhere(src["image"][0] == value)[0]
            assert np.allclose(_world(new_t, row, col), _world(old_t, old_row, old_col))
            # valid and label mask travel with the same pixel
            assert out["valid"][3, row, col] == src["valid"][3, old_row, old_col]
            assert out["label"][row, col] == src["label"][old_row, old_col]


def test_apply_views_transforms_image_valid_and_target_identically():
    cfg = ViewConfig(crop=5, flip=True, rotate=True, target="full")
    rng = np.random.default_rng(3)
    for _ in range(6):
        out = apply_views(_cube_sample(), cfg, rng, train=True)
        assert out["image"].shape == (6, 5, 5) and out["target"]["image"].shape == (6, 5, 5)
        np.testing.assert_array_equal(out["image"], out["target"]["image"])
        np.testing.assert_array_equal(out["valid"], (out["image"] % 7) != 0)
        np.testing.assert_array_equal(out["target"]["valid"], out["valid"])


def test_eval_views_are_deterministic_centre_crops():
    cfg = ViewConfig(crop=4, spectral="subset", min_bands=2, max_bands=3)
    a = apply_views(_cube_sample(), cfg, np.random.default_rng(0), train=False)
    b = apply_views(_cube_sample(), cfg, np.random.default_rng(1), train=False)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["image"], _cube_sample()["image"][:, 2:6, 3:7])


@pytest.mark.parametrize("kind", ["window", "subset", "any"])
def test_spectral_views_keep_metadata_aligned_with_bands(kind):
    src = _cube_sample(c=12)
    cfg = ViewConfig(spectral=kind, min_bands=3, max_bands=7)
    rng = np.random.default_rng(1)
    for _ in range(10):
        out = spectral_view(src, cfg, rng)
        k = out["image"].shape[0]
        assert 3 <= k <= 7 and out["wavelength"].shape == (k,) and out["fwhm"].shape == (k,)
        for i in range(k):  # each kept band brings its own wavelength and valid plane
            j = int(np.flatnonzero(src["wavelength"] == out["wavelength"][i])[0])
            np.testing.assert_array_equal(out["image"][i], src["image"][j])
            np.testing.assert_array_equal(out["valid"][i], src["valid"][j])
        if kind == "window":
            idx = np.searchsorted(src["wavelength"], out["wavelength"])
            assert np.all(np.diff(idx) == 1)


def _hyperspectral(value=0.3, h=4, w=4):
    ng = get_sensor("aviris-ng")
    image = np.full((ng.num_bands, h, w), value, np.float32)
    valid = np.ones(image.shape, bool)
    valid[ng.absorption_mask()] = False
    image[~valid] = 0.0  # as the tiler stores absorption bands
    return {"image": image, "valid": valid, "wavelength": ng.wavelength, "fwhm": ng.fwhm,
            "gsd": 5.0, "sensor": "aviris-ng", "level": "L2", "meta": {"key": "flat"}}


@pytest.mark.parametrize("sensor", ["sentinel-2a", "landsat-8", "enmap"])
def test_simulated_view_of_a_flat_spectrum_is_flat(sensor):
    out = simulate_sensor(_hyperspectral(0.3), sensor)
    target = get_sensor(sensor)
    assert out["sensor"] == target.name and out["image"].shape[1:] == (4, 4)
    assert out["wavelength"].shape == (out["image"].shape[0],)
    assert set(out["wavelength"].tolist()) <= set(target.wavelength.tolist())
    assert out["valid"].any(axis=(1, 2)).sum() >= 0.6 * out["image"].shape[0]
    np.testing.assert_allclose(out["image"][out["valid"]], 0.3, rtol=1e-5)
    assert np.all(out["image"][~out["valid"]] == 0)
    assert out["meta"]["simulated_from"] == "aviris-ng"


def test_sentinel2_simulation_uses_tabulated_responses_and_drops_uncovered_bands():
    s2 = get_sensor("sentinel-2a")
    assert s2.responses is not None
    src = _hyperspectral()
    src["image"] = (src["wavelength"][:, None, None] / 1000.0 * src["valid"]).astype(np.float32)
    out = simulate_sensor(src, "sentinel-2a")
    red = int(np.argmin(np.abs(out["wavelength"] - 665)))
    assert abs(out["image"][red, 0, 0] - 0.665) < 0.01  # linear spectrum -> value at band centre
    cirrus = np.abs(out["wavelength"] - 1375) < 20  # B10 sits in the water-absorption band
    assert not out["valid"][cirrus].any()


def test_invalid_pixels_are_left_out_not_averaged_as_zero():
    src = _hyperspectral(0.5)
    src["valid"][:, 0, 0] = False
    src["valid"][: len(src["wavelength"]) // 4, 1, 1] = False  # blue-green half missing
    src["image"][~src["valid"]] = 0.0
    out = simulate_sensor(src, "sentinel-2a")
    assert not out["valid"][:, 0, 0].any()
    np.testing.assert_allclose(out["image"][out["valid"]], 0.5, rtol=1e-5)
    assert out["valid"][:, 1, 1].sum() < out["valid"][:, 2, 2].sum()


def test_sensor_target_view_for_cross_sensor_reconstruction():
    cfg = ViewConfig(flip=False, rotate=False, crop=2, target="sensor",
                     target_sensors=["sentinel-2a"], spectral="window", min_bands=20)
    out = apply_views(_hyperspectral(), cfg, np.random.default_rng(0), train=True)
    assert out["target"]["sensor"] == "sentinel-2a" and out["sensor"] == "aviris-ng"
    assert out["target"]["image"].shape[1:] == out["image"].shape[1:] == (2, 2)
    assert out["image"].shape[0] >= 20


def test_normalisation_modes_keep_invalid_pixels_zero():
    src = _cube_sample()
    affine = normalize_sample(src, NormalizeConfig(mode="affine", scale=0.5, offset=1.0))
    np.testing.assert_allclose(affine["image"][src["valid"]], src["image"][src["valid"]] * 0.5 + 1)
    assert np.all(affine["image"][~src["valid"]] == 0)
    per = normalize_sample(src, NormalizeConfig(mode="per_sample"))
    for band in range(6):
        vals = per["image"][band][src["valid"][band]]
        assert abs(vals.mean()) < 1e-4 and abs(vals.std() - 1) < 1e-3
    assert per["meta"]["norm"]["mean"].shape == (6,)
    assert normalize_sample(src, NormalizeConfig()) is src
