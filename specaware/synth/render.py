"""Render a ground through a sensor: spectral response, residual atmosphere, noise, nodata.

Letters: j endmembers, l fine-grid wavelengths, c sensor bands, h rows, x columns.

The scene is linear in its endmembers, so a sensor's image is
    image[c, h, x] = shade[h, x] * sum_j A[j, h, x] * (SRF @ (T * E_j))[c] + noise,
with E_j the library spectra on the 1 nm grid, T the residual two-way transmission of an L2
product (near 0 in the deep water-vapour windows at ~1380 and ~1880 nm and beyond ~2450 nm,
where surface reflectance cannot be retrieved) and SRF the sensor's response matrix
(Gaussian from centre + FWHM, tabulated curves for Sentinel-2, as in
`specaware.sensors.srf_matrix`).
Noise: Gaussian, sigma = floor + shot * sqrt(signal), stronger at the spectrum's edges.
Nodata: a slanted swath edge and dead detector columns, written as the nodata value.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from einops import rearrange

from specaware.sensors import Sensor, gaussian_response, get_sensor
from specaware.synth.spectra import GRID_FWHM_NM, GRID_NM

NODATA = -9999.0


def transmission(wavelength_nm: np.ndarray) -> np.ndarray:
    """Residual transmission [l] of an atmospherically corrected (L2) product, 0..1.

    The deep windows (~1340-1450 and ~1800-1960 nm) are flat-bottomed (super-Gaussian) and keep
    ~0.5% of the signal; the 940 and 1130 nm bands keep most of it (they are retrievable).
    """
    wl = np.asarray(wavelength_nm, dtype=np.float64)
    t = np.ones_like(wl)
    for centre, width, depth, power in ((940, 18, 0.15, 2), (1130, 22, 0.2, 2),
                                        (1395, 45, 0.995, 4), (1875, 65, 0.995, 4)):
        t *= 1 - depth * np.exp(-0.5 * np.abs((wl - centre) / width) ** power)
    t *= 1 / (1 + np.exp((wl - 2475) / 12))   # long-wave end: detector + water vapour
    t *= 1 / (1 + np.exp(-(wl - 385) / 8))    # short-wave end: ozone + optics
    return t


@functools.lru_cache(maxsize=32)
def fine_to_sensor(sensor_name: str) -> np.ndarray:
    """Response matrix [c, l] from the 1 nm library grid to the sensor's bands (cached).

    The library grid samples a continuous spectrum densely, so a band's value is its response
    curve sampled on the grid, normalised to sum 1: the limit of `srf_matrix` for 1 nm source
    bands (same Gaussian, same tabulated curves), without its band-overlap integral, which
    costs seconds for 2201 source bands.
    """
    s = get_sensor(sensor_name)
    rows = np.zeros((s.num_bands, GRID_NM.size), dtype=np.float64)
    for i, (centre, fwhm) in enumerate(zip(s.wavelength, s.fwhm)):
        curve = s.responses[i] if s.responses else None
        if curve is None:
            rows[i] = gaussian_response(GRID_NM, float(centre), max(float(fwhm), GRID_FWHM_NM))
        else:
            order = np.argsort(curve[0])
            rows[i] = np.interp(GRID_NM, curve[0][order], curve[1][order], left=0.0, right=0.0)
    return (rows / np.maximum(rows.sum(axis=1, keepdims=True), 1e-12)).astype(np.float32)


def sensor_endmembers(endmembers: np.ndarray, sensor: Sensor) -> np.ndarray:
    """Endmember spectra [k, m, l] on the fine grid -> [j, c] in the sensor's bands (L2)."""
    flat = rearrange(endmembers, "k m l -> (k m) l") * transmission(GRID_NM)[None]
    return (flat @ fine_to_sensor(sensor.name).T).astype(np.float32)


@dataclass(frozen=True)
class NoiseModel:
    """Reflectance noise: sigma = floor * band_factor + shot * sqrt(signal) (reflectance units)."""
    floor: float
    shot: float

    def sigma(self, wavelength: np.ndarray, signal: np.ndarray) -> np.ndarray:
        """Per-value sigma [c, h, x] for band centres [c] nm and signal [c, h, x]."""
        wl = np.asarray(wavelength, dtype=np.float32)
        # Detector response falls at both ends of the range and in the SWIR.
        band = 1 + 0.5 * (wl > 1000) + 1.5 * ((wl < 420) | (wl > 2400))
        return self.floor * band[:, None, None] + self.shot * np.sqrt(np.clip(signal, 0, None))


def default_noise(sensor: Sensor) -> NoiseModel:
    """Imaging spectrometers have narrow bands and so less signal per band than multispectral."""
    if sensor.num_bands > 30:
        return NoiseModel(floor=0.003, shot=0.006)
    return NoiseModel(floor=0.0015, shot=0.003)


def render(abundances: np.ndarray, shade: np.ndarray, spectra: np.ndarray) -> np.ndarray:
    """Noise-free image [c, h, x] from abundances [j, h, x], shading [h, x], spectra [j, c]."""
    image = np.einsum("jhx,jc->chx", abundances, spectra, optimize=True)
    return (image * shade[None]).astype(np.float32)


def add_noise(image: np.ndarray, sensor: Sensor, rng: np.random.Generator,
              noise: NoiseModel | None = None) -> np.ndarray:
    """image [c, h, x] plus sensor noise, float32, clipped at 0.

    Dark targets (water in the SWIR, absorption bands) would go negative; L2 processors report
    those as 0 reflectance, and tiling treats negative values as invalid.
    """
    noise = noise or default_noise(sensor)
    sigma = noise.sigma(sensor.wavelength, image)
    noisy = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.maximum(noisy, 0.0, out=noisy).astype(np.float32, copy=False)


def nodata_mask(rng: np.random.Generator, size: int, pushbroom: bool,
                edge_probability: float = 0.5, max_edge_fraction: float = 0.12) -> np.ndarray:
    """bool [h, x], True = no data: maybe a slanted swath edge, maybe dead detector columns.

    pushbroom: imaging spectrometers read one detector column per image column, so a dead
    detector element is a full-height stripe; framing/multispectral scenes get none.
    """
    mask = np.zeros((size, size), dtype=bool)
    if rng.random() < edge_probability:
        rows = np.arange(size)[:, None]
        cols = np.arange(size)[None, :]
        start = rng.uniform(0, max_edge_fraction) * size
        slope = rng.uniform(-0.5, 0.5) * max_edge_fraction
        edge = start + slope * (rows - size / 2)
        mask |= cols < edge if rng.random() < 0.5 else cols >= size - edge
    if pushbroom:
        for _ in range(int(rng.integers(0, 3))):
            col = int(rng.integers(0, size))
            mask[:, col: col + int(rng.integers(1, 3))] = True
    return mask


def apply_nodata(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Write NODATA into every band of the masked pixels (in place) and return the image."""
    image[:, mask] = NODATA
    return image
