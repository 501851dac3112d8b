"""Spectral response matrices: rows are normalised weights, hand-checkable in simple cases."""
import numpy as np
import pytest

from specaware.sensors import get_sensor, srf_matrix


def test_identity_when_source_and_destination_are_the_same_narrow_bands():
    wl = np.array([500.0, 600.0, 700.0])
    w = srf_matrix(wl, 5.0, wl, 5.0)
    np.testing.assert_allclose(w, np.eye(3), atol=1e-6)


def test_two_equally_close_source_bands_get_equal_weight():
    w = srf_matrix([590.0, 610.0], [10.0, 10.0], [600.0], [10.0])
    np.testing.assert_allclose(w, [[0.5, 0.5]], atol=1e-5)


def test_rows_sum_to_one_and_uncovered_bands_are_zero():
    avng, l8 = get_sensor("aviris-ng"), get_sensor("landsat-8")
    w = srf_matrix(avng.wavelength, avng.fwhm, l8.wavelength, l8.fwhm, l8.responses)
    assert w.shape == (11, 425) and w.dtype == np.float32
    sums = w.sum(axis=1)
    thermal = [l8.band_names.index("B10"), l8.band_names.index("B11")]
    np.testing.assert_allclose(np.delete(sums, thermal), 1.0, atol=1e-5)
    assert np.all(sums[thermal] == 0)


@pytest.mark.parametrize("target", ["sentinel-2a", "emit", "desis"])
def test_flat_spectrum_stays_flat_after_resampling(target):
    src, dst = get_sensor("aviris-classic"), get_sensor(target)
    w = srf_matrix(src.wavelength, src.fwhm, dst.wavelength, dst.fwhm, dst.responses)
    out = w @ np.full(src.num_bands, 0.3)
    covered = w.sum(axis=1) > 0
    np.testing.assert_allclose(out[covered], 0.3, rtol=1e-5)


def test_tabulated_response_is_used_instead_of_gaussian():
    # A box response over 640-660 nm must ignore a source band at 700 nm entirely.
    box = (np.array([639.0, 640.0, 660.0, 661.0]), np.array([0.0, 1.0, 1.0, 0.0]))
    w = srf_matrix([650.0, 700.0], [2.0, 2.0], [650.0], [200.0], responses=[box])
    np.testing.assert_allclose(w, [[1.0, 0.0]], atol=1e-6)
    with pytest.raises(ValueError, match="2 response curves for 1"):
        srf_matrix([650.0], [2.0], [650.0], [2.0], responses=[box, box])
