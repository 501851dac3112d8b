"""Codec round trips: KEY.npy + KEY.json back to the same sample, valid mask restored."""
import io
import json

import numpy as np
import pytest

from specaware.data.codec import (INT16_NODATA, SampleDecodeError, decode_sample, encode_sample,
                                  make_key)
from specaware.data.sample import SampleError, make_sample
from specaware.testing import sensor_bands, synthetic_cube


def _sample(c_max=20, seed=0, invalid=0.1):
    wl, fwhm, _ = sensor_bands("aviris-ng", c_max)
    cube = synthetic_cube(wl, 12, 10, seed=seed)
    rng = np.random.default_rng(seed)
    valid = rng.random(cube.shape) >= invalid
    meta = {"key": "scene_r000000_c000000", "scene": "scene", "crs": "EPSG:32611",
            "transform": [2.0, 0.0, 500000.0, 0.0, -2.0, 4100000.0],
            "descriptors": {"landcover": "vegetation", "entropy": 3.2}, "label": 4}
    return make_sample(cube, wl, fwhm, valid=valid, gsd=2.0, sensor="aviris-ng", level="L2",
                       meta=meta)


@pytest.mark.parametrize("dtype,atol", [("int16", 0.5e-4 + 1e-7), ("float16", 1e-3)])
def test_round_trip_restores_values_valid_and_metadata(dtype, atol):
    sample = _sample()
    members = encode_sample(sample, dtype=dtype)
    assert set(members) == {"npy", "json"}
    out = decode_sample(members["npy"], members["json"])
    np.testing.assert_array_equal(out["valid"], sample["valid"])
    np.testing.assert_allclose(out["image"], sample["image"], atol=atol)
    assert np.all(out["image"][~out["valid"]] == 0)
    np.testing.assert_array_equal(out["wavelength"], sample["wavelength"])
    np.testing.assert_array_equal(out["fwhm"], sample["fwhm"])
    assert (out["gsd"], out["sensor"], out["level"]) == (2.0, "aviris-ng", "L2")
    assert out["meta"] == sample["meta"]  # key, scene, crs, transform, descriptors, label


def test_stored_arrays_use_the_documented_dtype_and_sentinel():
    sample = _sample()
    for dtype, check in [("int16", lambda a: a == INT16_NODATA), ("float16", np.isnan)]:
        members = encode_sample(sample, dtype=dtype)
        stored = np.load(io.BytesIO(members["npy"]), allow_pickle=False)
        assert stored.dtype == np.dtype(dtype) and stored.shape == sample["image"].shape
        np.testing.assert_array_equal(check(stored), ~sample["valid"])
        header = json.loads(members["json"])
        assert header["dtype"] == dtype and header["key"] == "scene_r000000_c000000"


def test_dropped_bands_are_zeros_and_decode_as_invalid():
    sample = _sample(invalid=0.0)
    band_valid = np.ones(20, bool)
    band_valid[[3, 7]] = False
    members = encode_sample(sample, dtype="int16", band_valid=band_valid)
    stored = np.load(io.BytesIO(members["npy"]))
    assert np.all(stored[[3, 7]] == 0)  # zeros, not sentinels
    out = decode_sample(members["npy"], members["json"])
    assert not out["valid"][[3, 7]].any() and out["valid"][0].all()
    assert np.all(out["image"][[3, 7]] == 0)


def test_large_radiance_values_get_an_automatic_int16_scale():
    sample = _sample(invalid=0.0)
    sample["image"] = sample["image"] * 300.0  # radiance-like magnitude, beyond 1e-4 steps
    members = encode_sample(sample, dtype="int16")
    header = json.loads(members["json"])
    assert header["scale"] > 1e-4
    out = decode_sample(members["npy"], members["json"])
    np.testing.assert_allclose(out["image"], sample["image"], rtol=1e-3, atol=header["scale"])


def test_decoded_members_from_webdataset_autodecode_are_accepted():
    sample = _sample()
    members = encode_sample(sample, dtype="float16")
    array = np.load(io.BytesIO(members["npy"]))
    out = decode_sample(array, json.loads(members["json"]))
    np.testing.assert_array_equal(out["valid"], sample["valid"])


def test_broken_members_raise_decode_error_naming_the_key():
    members = encode_sample(_sample(), dtype="float16")
    with pytest.raises(SampleDecodeError, match="sample 'k1'"):
        decode_sample(b"garbage", members["json"], key="k1")
    header = json.loads(members["json"])
    header["wavelength"] = header["wavelength"][:-1]
    with pytest.raises(SampleDecodeError, match="does not match 19 wavelengths"):
        decode_sample(members["npy"], json.dumps(header))


def test_contract_violations_name_the_key():
    with pytest.raises(SampleError, match="'wavelength' has shape"):
        make_sample(np.zeros((3, 4, 4)), [500.0, 600.0], [10.0, 10.0], gsd=1, sensor="x",
                    level="L2")
    with pytest.raises(SampleError, match="in nm"):
        make_sample(np.zeros((2, 4, 4)), [0.5, 0.6], [0.01, 0.01], gsd=1, sensor="x",
                    level="L2")
    with pytest.raises(ValueError, match="dtype must be one of"):
        encode_sample(_sample(), dtype="float32")


def test_sample_keys_keep_only_safe_characters_and_never_start_or_end_with_a_dash():
    # webdataset cuts member names at the first dot
    assert make_key("./AVIRIS NG.v2/", 3, 40) == "AVIRIS-NG-v2_r000003_c000040"
    assert make_key("X-band_X", 0, 0) == "X-band_X_r000000_c000000"
    assert make_key(" ./ ", 1, 2) == "scene_r000001_c000002"
