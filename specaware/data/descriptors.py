"""Per-tile descriptors written into the manifest, for curation (CSMoE's thematic/climatic
stratified sampling, docs/DESIGN.md section 1 "Curation") and low-information pruning.

Computed from the pixels and the band wavelengths only, so they work for any band set:
- landcover: majority spectral land-cover proxy (water / vegetation / bare / built) from
  normalised-difference indices on bands found by wavelength, plus the class fractions;
- mean_reflectance: mean of the valid values (radiance units at L1);
- entropy: information content in bits (histogram entropy, see `histogram_entropy`);
- latitude / climate_zone: from the tile centre (a latitude-belt proxy for Koppen zones).
These are proxies meant for balancing a training set, not a classification product.
"""
from __future__ import annotations

import numpy as np

LANDCOVER_CLASSES = ("water", "vegetation", "bare", "built")
# Spectral windows (nm) in which the band means stand for broad channels; wide enough that
# Sentinel-2, Landsat and every spectrometer of the catalogue have a band in each.
WINDOWS = {"blue": (450.0, 520.0), "green": (530.0, 590.0), "red": (630.0, 690.0),
           "nir": (780.0, 900.0), "swir1": (1550.0, 1750.0)}
NDWI_WATER = 0.05     # McFeeters NDWI (green - nir) / (green + nir) above this: open water
NDVI_VEGETATION = 0.35
# A window with no band borrows the nearest band within this distance of its centre (coarse or
# thinned band sets); farther than that, the channel is treated as missing.
NEAREST_BAND_NM = 60.0
FLAT_VISIBLE = 1.25   # red/blue below this: spectrally flat (asphalt, concrete, roofs)
ENTROPY_BINS = 64
ENTROPY_MAX_BANDS = 16
CLIMATE_BELTS = ((23.44, "tropical"), (35.0, "subtropical"), (55.0, "temperate"),
                 (66.56, "boreal"), (90.0, "polar"))


def channel_means(image: np.ndarray, valid: np.ndarray, wavelength: np.ndarray,
                  ) -> dict[str, np.ndarray]:
    """Per-pixel mean over the valid bands inside each window -> {name: float32 [H, W]} (NaN
    where no band is valid); windows without any band nearby are left out."""
    out = {}
    for name, (low, high) in WINDOWS.items():
        idx = np.flatnonzero((wavelength >= low) & (wavelength <= high))
        if idx.size == 0:
            distance = np.abs(wavelength - (low + high) / 2)
            if distance.size == 0 or distance.min() > NEAREST_BAND_NM + (high - low) / 2:
                continue
            idx = np.array([int(np.argmin(distance))])
        count = valid[idx].sum(axis=0)
        total = np.where(valid[idx], image[idx], 0).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = (total / count).astype(np.float32)
    return out


def _nd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a - b) / (a + b)


def landcover_map(channels: dict[str, np.ndarray]) -> np.ndarray | None:
    """int8 [H, W] class index into LANDCOVER_CLASSES (-1 = undetermined), or None when the
    band set lacks green, red or NIR."""
    if not {"green", "red", "nir"} <= set(channels):
        return None
    g, r, n = channels["green"], channels["red"], channels["nir"]
    classes = np.full(g.shape, LANDCOVER_CLASSES.index("bare"), dtype=np.int8)
    if "blue" in channels:
        with np.errstate(invalid="ignore", divide="ignore"):
            flat = r / channels["blue"] < FLAT_VISIBLE
        classes[flat] = LANDCOVER_CLASSES.index("built")
    classes[_nd(n, r) > NDVI_VEGETATION] = LANDCOVER_CLASSES.index("vegetation")
    classes[_nd(g, n) > NDWI_WATER] = LANDCOVER_CLASSES.index("water")
    classes[~(np.isfinite(g) & np.isfinite(r) & np.isfinite(n))] = -1
    return classes


def histogram_entropy(image: np.ndarray, valid: np.ndarray) -> float:
    """Shannon entropy (bits) of the valid values, averaged over up to 16 evenly spaced bands.

    Every band is binned on the same 64 bins spanning the tile's 0.1-99.9 percentile range, so
    a constant or saturated tile scores ~0 and a textured one up to log2(64) = 6.
    """
    bands = [c for c in range(image.shape[0]) if valid[c].any()]
    if not bands:
        return 0.0
    bands = [bands[i] for i in np.linspace(0, len(bands) - 1,
                                            min(len(bands), ENTROPY_MAX_BANDS)).astype(int)]
    values = image[bands][valid[bands]]
    low, high = np.percentile(values, [0.1, 99.9])
    if not high > low:
        return 0.0
    bits = []
    for c in bands:
        counts, _ = np.histogram(image[c][valid[c]], bins=ENTROPY_BINS, range=(low, high))
        p = counts[counts > 0] / counts.sum()
        bits.append(float(-(p * np.log2(p)).sum()))
    return float(np.mean(bits))


def climate_zone(latitude: float | None) -> str:
    """Latitude-belt proxy for the climate zone of a tile centre ("unknown" without CRS)."""
    if latitude is None or not np.isfinite(latitude):
        return "unknown"
    return next(name for limit, name in CLIMATE_BELTS if abs(latitude) <= limit)


def tile_descriptors(image: np.ndarray, valid: np.ndarray, wavelength: np.ndarray,
                     latitude: float | None = None) -> dict[str, object]:
    """Descriptors of one tile. image float32 [C, H, W], valid bool [C, H, W], wavelength [C] nm.

    Returns landcover (str), landcover_fractions {class: fraction of determined pixels},
    mean_reflectance, entropy (bits), latitude (deg or None), climate_zone (str).
    """
    wavelength = np.asarray(wavelength, dtype=np.float64)
    classes = landcover_map(channel_means(image, valid, wavelength))
    landcover, fractions = "unknown", {}
    if classes is not None and (classes >= 0).any():
        counts = np.bincount(classes[classes >= 0], minlength=len(LANDCOVER_CLASSES))
        fractions = {k: round(float(v) / float(counts.sum()), 4) for k, v in
                     zip(LANDCOVER_CLASSES, counts)}
        landcover = LANDCOVER_CLASSES[int(np.argmax(counts))]
    mean = float(image[valid].mean()) if valid.any() else 0.0
    return {"landcover": landcover, "landcover_fractions": fractions,
            "mean_reflectance": round(mean, 6),
            "entropy": round(histogram_entropy(image, valid), 4),
            "latitude": None if latitude is None else round(float(latitude), 5),
            "climate_zone": climate_zone(latitude)}
