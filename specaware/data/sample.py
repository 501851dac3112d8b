"""The sample contract (DESIGN.md section 1): one tile of one sensor, with its band metadata.

    image      float32 [C, H, W]  reflectance (L2, 0..1) or scaled radiance (L1); invalid = 0
    valid      bool    [C, H, W]  False where nodata / non-finite / out of range / absorption
    wavelength float32 [C] nm;  fwhm float32 [C] nm;  gsd float m
    sensor str;  level str;  meta dict (key, scene, crs, transform, descriptors, label?)

Numpy arrays here; collate turns them into torch tensors.
"""
from __future__ import annotations

from typing import Any

import numpy as np

SAMPLE_KEYS = ("image", "valid", "wavelength", "fwhm", "gsd", "sensor", "level", "meta")
META_KEYS = ("key", "scene", "crs", "transform", "descriptors")


class SampleError(ValueError):
    """A sample that breaks the contract; the message names the key and what was expected."""


def make_sample(image, wavelength, fwhm, *, valid=None, gsd: float, sensor: str,
                level: str, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build a contract sample; `valid` [C,H,W] or [H,W] (default: finite pixels).

    Invalid pixels are zeroed in `image` so downstream code never meets NaN.
    """
    image = np.asarray(image, dtype=np.float32)
    if valid is None:
        valid = np.isfinite(image)
    valid = np.broadcast_to(np.asarray(valid, dtype=bool), image.shape).copy()
    valid &= np.isfinite(image)
    image = np.where(valid, image, np.float32(0))
    full_meta = {"key": "", "scene": "", "crs": None, "transform": None, "descriptors": {}}
    full_meta.update(meta or {})
    sample = {
        "image": image, "valid": valid,
        "wavelength": np.asarray(wavelength, dtype=np.float32).reshape(-1),
        "fwhm": np.asarray(fwhm, dtype=np.float32).reshape(-1),
        "gsd": float(gsd), "sensor": str(sensor), "level": str(level), "meta": full_meta,
    }
    check_sample(sample)
    return sample


def check_sample(sample: dict[str, Any], where: str = "sample") -> None:
    """Raise SampleError naming the key when `sample` does not follow the contract."""
    missing = [k for k in SAMPLE_KEYS if k not in sample]
    if missing:
        raise SampleError(f"{where}: missing keys {missing}; a sample needs {list(SAMPLE_KEYS)}")
    image = sample["image"]
    if getattr(image, "ndim", None) != 3:
        raise SampleError(f"{where}: 'image' must be [C, H, W], got shape "
                          f"{getattr(image, 'shape', type(image))}")
    c = image.shape[0]
    for key in ("wavelength", "fwhm"):
        shape = tuple(getattr(sample[key], "shape", ()))
        if shape != (c,):
            raise SampleError(f"{where}: '{key}' has shape {shape}, expected ({c},) to match "
                              f"the {c} bands of 'image'")
    valid_shape = tuple(getattr(sample["valid"], "shape", ()))
    if valid_shape not in (tuple(image.shape), tuple(image.shape[1:])):
        raise SampleError(f"{where}: 'valid' has shape {valid_shape}, expected "
                          f"{tuple(image.shape)} or {tuple(image.shape[1:])}")
    wl = np.asarray(sample["wavelength"], dtype=np.float64)
    if c and (np.nanmin(wl) < 100 or not np.all(np.isfinite(wl))):
        raise SampleError(f"{where}: 'wavelength' must be finite and in nm (min {np.nanmin(wl)}"
                          f"); micrometre values must be converted at the reader")
    if not isinstance(sample["meta"], dict):
        raise SampleError(f"{where}: 'meta' must be a dict, got {type(sample['meta']).__name__}")
