"""The sample contract (docs/DESIGN.md section 1): one tile of one sensor, with its band metadata.

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


# Plausible band centres: near UV to thermal infrared (Landsat TIRS ~12 um, ASTER TIR ~11 um).
# A value outside is a unit mistake (nm read as um gives 1e5-1e6; um read as nm gives < 30).
WAVELENGTH_RANGE_NM = (300.0, 15000.0)


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
    check_band_metadata(sample["wavelength"], sample["fwhm"], sample["gsd"], where)
    if not isinstance(sample["meta"], dict):
        raise SampleError(f"{where}: 'meta' must be a dict, got {type(sample['meta']).__name__}")


def check_band_metadata(wavelength, fwhm, gsd, where: str = "sample") -> None:
    """Raise SampleError naming the key unless the band metadata is usable: at least one band;
    wavelengths finite, distinct and in WAVELENGTH_RANGE_NM (nm); FWHM finite and >= 0 (nm);
    gsd finite and > 0 (m). A NaN here poisons every token of its batch."""
    wl = np.asarray(wavelength, dtype=np.float64).reshape(-1)
    widths = np.asarray(fwhm, dtype=np.float64).reshape(-1)
    lo, hi = WAVELENGTH_RANGE_NM
    if wl.size == 0:
        raise SampleError(f"{where}: 0 bands; a sample needs at least one band")
    if not np.all(np.isfinite(wl)) or wl.min() < lo or wl.max() > hi:
        raise SampleError(f"{where}: 'wavelength' must be finite and in nm within {lo:g}-{hi:g} "
                          f"(got {np.nanmin(wl):g}..{np.nanmax(wl):g}); micrometre values must be "
                          f"converted at the reader, and a header's units must match its values")
    if np.unique(wl).size != wl.size:
        dup = sorted({float(x) for x in wl if np.count_nonzero(wl == x) > 1})
        raise SampleError(f"{where}: 'wavelength' lists {dup[:5]} nm more than once; each band "
                          f"needs its own centre")
    if not np.all(np.isfinite(widths)) or np.any(widths < 0):
        raise SampleError(f"{where}: 'fwhm' must be finite and >= 0 nm (got "
                          f"{[float(x) for x in widths if not (np.isfinite(x) and x >= 0)][:5]})")
    if not (isinstance(gsd, (int, float, np.number)) and np.isfinite(gsd) and gsd > 0):
        raise SampleError(f"{where}: 'gsd' must be a finite ground sampling distance > 0 m, got "
                          f"{gsd!r}")
