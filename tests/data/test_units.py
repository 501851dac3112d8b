"""Wavelength units, one rule at the reader: explicit units are obeyed (unsupported ones refused),
unlabelled values are read by magnitude (below 30 = micrometres, which covers thermal bands
near 12 um), and whatever the units say, converted centres outside 300-15000 nm are refused
with an error naming the file."""
import numpy as np
import pytest
import rasterio

from specaware.data.raster import RasterMetadataError, open_scene
from specaware.testing import synthetic_cube, write_envi, write_geotiff

# Landsat 8/9 OLI + TIRS band centres in micrometres (coastal .. thermal 12 um)
LANDSAT_UM = [0.443, 0.482, 0.562, 0.655, 0.865, 1.609, 2.201, 10.895, 12.005]


def _cube(c: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(0.0, 0.5, (c, 16, 16)).astype(np.float32)


def _tag_wavelengths(path, values, units=None):
    with rasterio.open(path, "r+") as dst:
        for i, w in enumerate(values):
            dst.update_tags(i + 1, wavelength=f"{w:g}")
        if units:
            dst.update_tags(wavelength_units=units)


def test_unlabelled_thermal_bands_near_12_um_are_read_as_micrometres(tmp_path):
    path = write_geotiff(tmp_path / "landsat.tif", _cube(len(LANDSAT_UM)), style=None)
    _tag_wavelengths(path, LANDSAT_UM)
    scene = open_scene(path)
    np.testing.assert_allclose(scene.wavelength, np.array(LANDSAT_UM) * 1000, rtol=1e-6)
    assert scene.wavelength.max() == pytest.approx(12005.0)


def test_unlabelled_nanometres_stay_nanometres(tmp_path):
    path = write_geotiff(tmp_path / "s.tif", _cube(4), style=None)
    _tag_wavelengths(path, [450.0, 550.0, 650.0, 850.0])
    np.testing.assert_allclose(open_scene(path).wavelength, [450, 550, 650, 850])


def _envi_with_units(tmp_path, units: str, values) -> str:
    wl = "{" + ", ".join(f"{v:g}" for v in values) + "}"
    return write_envi(tmp_path / "s.img", _cube(len(values)),
                      extra_header=f"wavelength units = {units}\nwavelength = {wl}\n")


@pytest.mark.parametrize("units", ["Hertz", "wavenumber"])
def test_explicit_unsupported_units_in_an_envi_header_are_refused(tmp_path, units):
    path = _envi_with_units(tmp_path, units, [450.0, 550.0, 650.0])
    with pytest.raises(RasterMetadataError, match=f"units '{units}' are not supported") as err:
        open_scene(path)
    assert "s.img" in str(err.value) and "Nanometers or Micrometers" in str(err.value)


def test_explicit_micrometres_in_an_envi_header_are_obeyed(tmp_path):
    path = _envi_with_units(tmp_path, "Micrometers", [0.45, 0.55, 0.65])
    np.testing.assert_allclose(open_scene(path).wavelength, [450, 550, 650], rtol=1e-6)


def test_nanometres_tagged_as_micrometres_are_refused_naming_the_file(tmp_path):
    path = _envi_with_units(tmp_path, "Micrometers", [442.7, 1300.0, 2202.37])
    with pytest.raises(RasterMetadataError) as err:
        open_scene(path)
    msg = str(err.value)
    assert "s.img" in msg and "442700..2.20237e+06 nm" in msg
    assert "nanometre values tagged as micrometres" in msg and "wavelength units" in msg


def test_micrometres_tagged_as_nanometres_are_refused_in_band_tags(tmp_path):
    path = write_geotiff(tmp_path / "tagged.tif", _cube(3), style=None)
    _tag_wavelengths(path, [0.45, 0.55, 0.65], units="Nanometers")
    with pytest.raises(RasterMetadataError, match="micrometre values tagged as nanometres") as e:
        open_scene(path)
    assert "tagged.tif" in str(e.value) and "band tags" in str(e.value)


def test_plausible_geotiff_in_micrometres_still_round_trips(tmp_path):
    wl = np.array([480.0, 560.0, 660.0, 860.0])
    path = write_geotiff(tmp_path / "s.tif", synthetic_cube(wl, 16, 16), wavelength=wl,
                         fwhm=np.full(4, 20.0), units="um")
    np.testing.assert_allclose(open_scene(path).wavelength, wl, atol=1e-3)


def test_the_fine_tuning_reader_applies_the_same_plausibility_rule(tmp_path):
    from specaware.data.reader import RasterReader
    path = _envi_with_units(tmp_path, "Micrometers", [442.7, 1300.0, 2202.37])
    with pytest.raises(RasterMetadataError, match="nanometre values tagged as micrometres") as e:
        RasterReader.open(str(path))
    assert "s.img" in str(e.value)
