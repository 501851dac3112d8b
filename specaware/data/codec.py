"""One sample <-> the two webdataset members `KEY.npy` + `KEY.json` (INTERFACES.md "Shards").

`KEY.npy` holds the cube [C, H, W] as float16, or as int16 with `value = stored * scale + offset`.
Invalid pixels are stored as a sentinel (int16: -32768, float16: NaN) so decoding restores
`valid` without a second array. Bands that carry no signal at all (water absorption) are stored
as zeros and flagged False in `band_valid` [C] of the JSON; decoding folds that into `valid`.

`KEY.json` carries everything else of the contract (wavelength, fwhm, gsd, sensor, level, crs,
transform, scene, descriptors) plus dtype, scale, offset and nodata.
"""
from __future__ import annotations

import io
import json
import re
from typing import Any

import numpy as np

from specaware.data.sample import SampleError, check_sample

FORMAT = "specaware-sample/1"
INT16_NODATA = -32768
INT16_MAX = 32767
FLOAT16_MAX = float(np.finfo(np.float16).max)
# Reflectance (|value| <= ~3.2) is stored with a fixed 1e-4 step, the convention of the agencies'
# own int16 products (Sentinel-2 L2A, Landsat C2 after their gain); larger ranges get a scale
# that maps the largest valid magnitude to the int16 limit.
REFLECTANCE_SCALE = 1e-4
DTYPES = ("float16", "int16")
_JSON_META = ("scene", "crs", "transform", "descriptors")
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def make_key(scene: str, row: int, col: int) -> str:
    """Sample key for the tile at pixel (row, col) of `scene`.

    webdataset splits member names at the first dot, so keys keep only [A-Za-z0-9_-].
    """
    stem = _KEY_UNSAFE.sub("-", scene).strip("-") or "scene"
    return f"{stem}_r{row:06d}_c{col:06d}"


class SampleDecodeError(ValueError):
    """A shard member that cannot be decoded; the message names the sample key."""


class SampleMetadataError(SampleDecodeError):
    """A decodable sample whose band metadata is unusable (NaN gsd or FWHM, gsd <= 0, negative
    FWHM, implausible or repeated wavelengths, 0 bands, a field of the wrong type)."""


def _int16_scale(values: np.ndarray, offset: float) -> float:
    peak = float(np.max(np.abs(values - offset))) if values.size else 0.0
    if peak <= INT16_MAX * REFLECTANCE_SCALE:
        return REFLECTANCE_SCALE
    return peak / INT16_MAX


def _pack(image: np.ndarray, valid: np.ndarray, dtype: str, scale, offset: float):
    if dtype == "float16":
        data = np.clip(image, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)
        data[~valid] = np.nan
        return data, 1.0, 0.0, "nan"
    if scale is None:
        scale = _int16_scale(image[valid], offset)
    stored = np.rint((image.astype(np.float64) - offset) / scale)
    data = np.clip(stored, -INT16_MAX, INT16_MAX).astype(np.int16)
    data[~valid] = INT16_NODATA
    return data, float(scale), float(offset), INT16_NODATA


def encode_sample(sample: dict[str, Any], *, dtype: str = "float16", scale: float | None = None,
                  offset: float = 0.0, band_valid=None) -> dict[str, bytes]:
    """Encode a contract sample into the members {"npy": bytes, "json": bytes}.

    dtype: "float16" or "int16"; scale/offset only for int16 (scale None = automatic).
    band_valid: bool [C]; False bands (e.g. absorption) are stored as zeros and decode as
    invalid. Default all True, so that a band is only ever dropped on purpose.
    """
    if dtype not in DTYPES:
        raise ValueError(f"encode_sample: dtype must be one of {DTYPES}, got {dtype!r}")
    check_sample(sample, where=f"sample '{sample.get('meta', {}).get('key', '?')}'")
    image = np.asarray(sample["image"], dtype=np.float32)
    c = image.shape[0]
    valid = np.broadcast_to(np.asarray(sample["valid"], dtype=bool), image.shape)
    band_valid = np.ones(c, bool) if band_valid is None else np.asarray(band_valid, bool)
    if band_valid.shape != (c,):
        raise ValueError(f"encode_sample: band_valid has shape {band_valid.shape}, expected ({c},)")
    valid = valid & np.isfinite(image)
    image = np.where(valid & band_valid[:, None, None], image, np.float32(0))
    # Pixels of dropped bands are zeros, not sentinels: `band_valid` carries that information.
    pixel_valid = valid | ~band_valid[:, None, None]
    data, scale, offset, nodata = _pack(image, pixel_valid, dtype, scale, offset)
    buffer = io.BytesIO()
    np.save(buffer, data, allow_pickle=False)
    meta = dict(sample["meta"])
    header = {
        "format": FORMAT, "key": meta.pop("key", ""),
        "wavelength": [float(x) for x in sample["wavelength"]],
        "fwhm": [float(x) for x in sample["fwhm"]],
        "gsd": float(sample["gsd"]), "sensor": sample["sensor"], "level": sample["level"],
        "dtype": dtype, "scale": scale, "offset": offset, "nodata": nodata,
        "band_valid": band_valid.tolist(), "shape": list(image.shape),
    }
    for key in _JSON_META:
        header[key] = meta.pop(key, None)
    header["descriptors"] = header["descriptors"] or {}
    header["meta"] = meta  # anything else (label, user fields) travels untouched
    return {"npy": buffer.getvalue(),
            "json": json.dumps(header, default=_json_default).encode("utf-8")}


def _json_default(value):
    """numpy scalars and arrays inside meta (labels, user descriptors) become plain JSON."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"meta value of type {type(value).__name__} is not JSON-serialisable")


def _load_members(npy, header, key: str):
    try:
        if isinstance(header, (bytes, bytearray, str)):
            header = json.loads(header)
        if isinstance(npy, (bytes, bytearray)):
            npy = np.load(io.BytesIO(npy), allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - any parse failure is a broken sample
        raise SampleDecodeError(f"sample '{key}': cannot parse members ({err})") from err
    if not isinstance(header, dict) or not isinstance(npy, np.ndarray):
        raise SampleDecodeError(f"sample '{key}': expected .npy array + .json object, got "
                                f"{type(npy).__name__} + {type(header).__name__}")
    return npy, header


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_header_types(header: dict, name: str) -> None:
    """SampleDecodeError naming the key and the JSON field for a header whose fields have the
    wrong type (null, a string, a list where an object belongs) or a non-finite pixel scale."""
    for field in ("wavelength", "fwhm", "band_valid"):
        if not isinstance(header[field], list):
            raise SampleMetadataError(f"sample '{name}': json '{field}' is "
                                      f"{type(header[field]).__name__}, expected a list")
    for field in ("wavelength", "fwhm"):
        if not all(_is_number(v) for v in header[field]):
            raise SampleMetadataError(f"sample '{name}': json '{field}' holds non-numbers")
    if not _is_number(header["gsd"]):
        raise SampleMetadataError(f"sample '{name}': json 'gsd' is {header['gsd']!r}, expected "
                                  "a number in metres")
    for field in ("scale", "offset"):
        value = header.get(field, 0.0)
        if not _is_number(value) or not np.isfinite(value) or abs(value) * INT16_MAX > 1e30:
            raise SampleMetadataError(f"sample '{name}': json '{field}' is {value!r}; pixels "
                                      "would decode to non-finite values")
    for field in ("meta", "descriptors"):
        if header.get(field) is not None and not isinstance(header[field], dict):
            raise SampleMetadataError(f"sample '{name}': json '{field}' is "
                                      f"{type(header[field]).__name__}, expected an object")


def decode_sample(npy, header, key: str | None = None) -> dict[str, Any]:
    """Decode the members back into a contract sample.

    npy: raw bytes of `KEY.npy` or the already-loaded array; header: raw bytes/str of
    `KEY.json` or the parsed dict. Raises SampleDecodeError (naming the key) on any mismatch.
    """
    name = key or (header.get("key") if isinstance(header, dict) else None) or "?"
    data, header = _load_members(npy, header, name)
    name = key or header.get("key") or name
    required = ("wavelength", "fwhm", "gsd", "sensor", "level", "dtype", "band_valid")
    missing = [k for k in required if k not in header]
    if missing:
        raise SampleDecodeError(f"sample '{name}': json lacks {missing}")
    _check_header_types(header, name)
    wl = np.asarray(header["wavelength"], dtype=np.float32)
    if data.ndim != 3 or data.shape[0] != wl.shape[0]:
        raise SampleDecodeError(f"sample '{name}': array shape {data.shape} does not match "
                                f"{wl.shape[0]} wavelengths")
    band_valid = np.asarray(header["band_valid"], dtype=bool)
    if band_valid.shape != wl.shape:
        raise SampleDecodeError(f"sample '{name}': band_valid has {band_valid.size} entries "
                                f"for {wl.size} bands")
    if data.dtype == np.int16:
        pixel_valid = data != INT16_NODATA
        image = data.astype(np.float32) * np.float32(header.get("scale", 1.0))
        image += np.float32(header.get("offset", 0.0))
    elif data.dtype == np.float16 or data.dtype == np.float32:
        pixel_valid = np.isfinite(data)
        image = data.astype(np.float32)
    else:
        raise SampleDecodeError(f"sample '{name}': unsupported array dtype {data.dtype}")
    valid = pixel_valid & band_valid[:, None, None]
    image = np.where(valid, image, np.float32(0))
    meta = {"key": name, **{k: header.get(k) for k in _JSON_META},
            **(header.get("meta") or {})}
    meta["descriptors"] = meta["descriptors"] or {}
    sample = {"image": image, "valid": valid, "wavelength": wl,
              "fwhm": np.asarray(header["fwhm"], dtype=np.float32),
              "gsd": float(header["gsd"]), "sensor": header["sensor"],
              "level": header["level"], "meta": meta}
    try:
        check_sample(sample, where=f"sample '{name}'")
    except SampleError as err:
        raise SampleMetadataError(str(err)) from err
    return sample
