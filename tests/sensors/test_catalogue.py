"""Catalogue sanity: every sensor file loads, has the published band count, nm units, and
wavelengths that increase within each spectrometer."""
import numpy as np
import pytest

from specaware.sensors import UnknownSensorError, get_sensor, list_sensors

EXPECTED_BANDS = {
    "aviris-classic": 224, "aviris-ng": 425, "aviris-3": 284, "enmap": 224, "prisma": 239,
    "emit": 285, "hyperion": 242, "desis": 235, "sentinel-2a": 13, "sentinel-2b": 13,
    "landsat-8": 11, "landsat-9": 11, "landsat-7": 8,
}


def test_catalogue_lists_exactly_the_contract_sensors():
    assert sorted(EXPECTED_BANDS) == list_sensors()


@pytest.mark.parametrize("name", sorted(EXPECTED_BANDS))
def test_sensor_band_count_units_and_shapes(name):
    s = get_sensor(name)
    assert s.num_bands == EXPECTED_BANDS[name]
    assert s.wavelength.dtype == np.float32 and s.fwhm.dtype == np.float32
    assert s.wavelength.shape == s.fwhm.shape == (s.num_bands,)
    assert len(s.band_names) == s.num_bands == len(set(s.band_names))
    # nm, not micrometres: solar-reflective bands start in the violet/blue.
    assert 340 < s.wavelength.min() < 500
    assert np.all(s.fwhm > 1) and np.all(s.fwhm < 2500)  # ETM+ thermal band is ~2.1 um wide
    assert s.gsd > 0 and "L2" in s.levels and s.value_caps["L2"] == pytest.approx(1.5)
    assert s.absorption_mask().dtype == bool and s.absorption_mask().shape == (s.num_bands,)


@pytest.mark.parametrize("name", ["aviris-classic", "aviris-ng", "aviris-3", "enmap", "prisma",
                                  "emit", "hyperion", "desis"])
def test_spectrometer_grids_are_monotone_within_segments_and_marked_approximate(name):
    s = get_sensor(name)
    steps = np.diff(s.wavelength)
    # Multi-spectrometer instruments restart lower at each detector boundary (overlap), at most
    # three times (AVIRIS-Classic has four spectrometers); everything else increases.
    assert (steps < 0).sum() <= 3
    assert np.all(steps[steps > 0] < 15)
    assert s.approximate and s.responses is None


def test_enmap_has_vnir_swir_overlap_near_950nm():
    wl = get_sensor("enmap").wavelength
    vnir, swir = wl[:91], wl[91:]
    assert vnir.max() > swir.min() and 880 < swir.min() < 1000


def test_sentinel2_centres_match_esa_table_and_carry_responses():
    s = get_sensor("S2A")
    esa = {"B2": 492.4, "B3": 559.8, "B4": 664.6, "B8": 832.8, "B8A": 864.7, "B11": 1613.7}
    for band, centre in esa.items():
        assert s.wavelength[s.band_names.index(band)] == pytest.approx(centre, abs=0.2)
    assert not s.approximate and len(s.responses) == 13
    wl, resp = s.responses[s.band_names.index("B4")]
    assert resp.max() == pytest.approx(1.0) and wl.min() > 600 and wl.max() < 720


def test_absorption_mask_flags_water_bands_only():
    s = get_sensor("aviris-ng")
    mask = s.absorption_mask()
    assert mask[np.argmin(abs(s.wavelength - 1400))] and mask[np.argmin(abs(s.wavelength - 1900))]
    assert not mask[np.argmin(abs(s.wavelength - 1650))] and not mask[np.argmin(abs(s.wavelength - 550))]
    l8 = get_sensor("landsat-8")
    assert l8.absorption_mask().tolist() == [b == "B9" for b in l8.band_names]  # cirrus only


def test_lookup_is_case_insensitive_with_aliases_and_unknown_lists_names():
    assert get_sensor("AVIRIS_NG") is get_sensor("avng") is get_sensor("aviris-ng")
    assert get_sensor("L8").name == "landsat-8"
    with pytest.raises(UnknownSensorError, match="Known sensors: aviris-3") as err:
        get_sensor("aviris-ngg")
    assert "Did you mean 'aviris-ng'" in str(err.value)
