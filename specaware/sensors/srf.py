"""Spectral response functions: the matrix that resamples one band set onto another.

A destination band i sees the radiance weighted by its response R_i(l). Each source band j
already integrates the radiance through its own response S_j(l). The least-assumption estimate of
the destination value is the combination of source bands weighted by how much their responses
overlap R_i:  w_ij = integral R_i(l) S_j(l) dl, rows normalised to sum to 1. Responses are
Gaussians from centre + FWHM, or tabulated curves when given (docs/DESIGN.md section 1, "Views").

All wavelengths and widths in nm.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
# Gaussians are evaluated out to this many sigma; beyond, the response is < 1e-4 of its peak.
TRUNCATE_SIGMA = 4.3
# A destination band whose response lies mostly outside the source range is not simulated
# (its row is all zeros) rather than extrapolated from the nearest edge band.
MIN_COVERAGE = 0.5


def gaussian_response(grid: np.ndarray, centre: float, fwhm: float) -> np.ndarray:
    """Peak-normalised Gaussian response on `grid` (nm) for a band at `centre` with `fwhm`."""
    sigma = max(float(fwhm), 1e-3) * FWHM_TO_SIGMA
    return np.exp(-0.5 * ((grid - centre) / sigma) ** 2)


def _support(centre: float, fwhm: float, curve) -> tuple[float, float]:
    if curve is not None:
        wl = np.asarray(curve[0], dtype=np.float64)
        return float(wl.min()), float(wl.max())
    half = TRUNCATE_SIGMA * float(fwhm) * FWHM_TO_SIGMA
    return centre - half, centre + half


def _dst_response(grid, centre, fwhm, curve) -> np.ndarray:
    if curve is None:
        return gaussian_response(grid, centre, fwhm)
    wl, resp = (np.asarray(a, dtype=np.float64) for a in curve)
    order = np.argsort(wl)
    return np.interp(grid, wl[order], resp[order], left=0.0, right=0.0)


def srf_matrix(src_wl, src_fwhm, dst_wl, dst_fwhm,
               responses: Sequence[tuple[np.ndarray, np.ndarray] | None] | None = None,
               ) -> np.ndarray:
    """Resampling weights from a source band set to a destination band set.

    src_wl, src_fwhm: [C_src] nm; dst_wl, dst_fwhm: [C_dst] nm.
    responses: optional tabulated destination curves, one (wavelength nm [K], response [K]) per
    destination band (None entries fall back to the Gaussian), e.g. `get_sensor("s2a").responses`.
    Returns float32 [C_dst, C_src]: `dst = W @ src` along the band axis. Each row sums to 1, or is
    all 0 when the destination band is not covered by the source range.
    """
    src_wl = np.asarray(src_wl, dtype=np.float64).reshape(-1)
    src_fwhm = np.broadcast_to(np.asarray(src_fwhm, dtype=np.float64), src_wl.shape)
    dst_wl = np.asarray(dst_wl, dtype=np.float64).reshape(-1)
    dst_fwhm = np.broadcast_to(np.asarray(dst_fwhm, dtype=np.float64), dst_wl.shape)
    if responses is not None and len(responses) != len(dst_wl):
        raise ValueError(f"srf_matrix: {len(responses)} response curves for "
                         f"{len(dst_wl)} destination bands")
    src_sigma = np.maximum(src_fwhm, 1e-3)[None, :] * FWHM_TO_SIGMA
    src_low = (src_wl - TRUNCATE_SIGMA * src_sigma[0]).min()
    src_high = (src_wl + TRUNCATE_SIGMA * src_sigma[0]).max()
    weights = np.zeros((len(dst_wl), len(src_wl)), dtype=np.float64)
    for i, (centre, fwhm) in enumerate(zip(dst_wl, dst_fwhm)):
        curve = None if responses is None else responses[i]
        low, high = _support(centre, fwhm, curve)
        step = min(1.0, max(float(src_fwhm.min()), 0.05) / 5.0, max(float(fwhm), 0.05) / 5.0)
        grid = np.arange(low, high + step, step)
        r_dst = _dst_response(grid, centre, fwhm, curve)
        total = r_dst.sum()
        if total <= 0:
            continue
        inside = (grid >= src_low) & (grid <= src_high)
        if r_dst[inside].sum() / total < MIN_COVERAGE:
            continue
        r_src = np.exp(-0.5 * ((grid[:, None] - src_wl[None, :]) / src_sigma) ** 2)
        row = r_dst @ r_src  # overlap integrals (grid step cancels in the normalisation)
        if row.sum() > 0:
            weights[i] = row / row.sum()
    return weights.astype(np.float32)
