"""Band tables of the classic hyperspectral benchmarks (nm). The .mat files carry no wavelengths,
so each benchmark names its sensor and, where the public description gives only a range and a
band count, an evenly spaced grid marked approximate. A wavelength vector stored in the file or
given by the user always wins over these tables (read and converted by data/band_metadata.py).

- AVIRIS-Classic: 224 bands ~400-2500 nm, ~10 nm FWHM (from the sensor catalogue when present).
  Salinas "corrected" drops bands 108-112, 154-167 and 224 (1-based) of the 224 -> 204 bands.
  Indian Pines was released with 220 bands (which 4 AVIRIS channels are absent is not
  documented), and "corrected" drops 104-108, 150-163 and 220 of those -> 200 bands; we number
  the 220 on an even 400-2500 nm grid. Approximate.
- ROSIS (Pavia University 103 bands, Pavia Centre 102 bands): 430-860 nm, ~4 nm. Approximate.
- ITRES CASI-1500 (Houston 2013): 144 bands 380-1050 nm. Approximate.
- Headwall Nano-Hyperspec (WHU-Hi): 270 (LongKou, HongHu) / 274 (HanChuan) bands 400-1000 nm.
  Approximate.
- EO-1 Hyperion (Hermiston, Farmland/Yancheng, River): 242 bands ~357-2577 nm of which the
  papers keep 154 or 198 calibrated bands without listing them. Approximate (a grid over the
  calibrated 400-2500 nm range): pass the true wavelengths when you have them.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def grid(start: float, stop: float, bands: int, fwhm: float | None = None):
    """Evenly spaced centres from `start` to `stop` nm; FWHM defaults to the spacing."""
    wl = np.linspace(start, stop, bands, dtype=np.float64)
    width = fwhm if fwhm is not None else (stop - start) / max(bands - 1, 1)
    return wl.astype(np.float32), np.full(bands, width, np.float32)


def aviris_classic() -> tuple[np.ndarray, np.ndarray, bool]:
    """The 224-band AVIRIS-Classic table: catalogue values, else an approximate grid."""
    try:
        from specaware.sensors import get_sensor
        s = get_sensor("aviris-classic")
        if s.num_bands == 224:
            return s.wavelength.astype(np.float32), s.fwhm.astype(np.float32), bool(s.approximate)
    except Exception as e:  # catalogue missing or broken: fall back, loudly
        log.warning("AVIRIS-Classic catalogue entry unavailable (%s); using a 400-2500 nm grid", e)
    wl, fwhm = grid(400.0, 2500.0, 224, fwhm=10.0)
    return wl, fwhm, True


def _drop_bands(one_based: list[tuple[int, int]], total: int = 224) -> np.ndarray:
    keep = np.ones(total, bool)
    for lo, hi in one_based:
        keep[lo - 1:hi] = False
    return keep


INDIAN_PINES_DROPPED = [(104, 108), (150, 163), (220, 220)]
SALINAS_DROPPED = [(108, 112), (154, 167), (224, 224)]


def aviris_subset(dropped: list[tuple[int, int]]):
    wl, fwhm, approx = aviris_classic()
    keep = _drop_bands(dropped)
    return wl[keep], fwhm[keep], approx


def indian_pines() -> tuple[np.ndarray, np.ndarray, bool]:
    """200 bands: the 220-band release on a 400-2500 nm grid minus its water bands."""
    wl, fwhm = grid(400.0, 2500.0, 220, fwhm=10.0)
    keep = _drop_bands(INDIAN_PINES_DROPPED, total=220)
    return wl[keep], fwhm[keep], True


def table(kind: str, bands: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """(wavelength [C], fwhm [C], approximate) for a benchmark's sensor table `kind`."""
    if kind == "aviris":
        return aviris_classic()
    if kind == "indian_pines":
        return indian_pines()
    if kind == "salinas":
        return aviris_subset(SALINAS_DROPPED)
    if kind == "rosis":
        return (*grid(430.0, 860.0, bands, fwhm=4.0), True)
    if kind == "casi":
        return (*grid(380.0, 1050.0, bands), True)
    if kind == "headwall_nano":
        return (*grid(400.0, 1000.0, bands), True)
    if kind == "hyperion":
        return (*grid(400.0, 2500.0, bands, fwhm=10.0), True)
    raise KeyError(f"unknown wavelength table {kind!r}")
