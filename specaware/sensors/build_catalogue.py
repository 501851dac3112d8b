"""Maintenance script that (re)writes the sensor catalogue JSON files in `data/`.

The JSON files are the catalogue; this script only documents where their numbers come from and
lets a maintainer regenerate them. It is not imported by the package at run time.

    PYTHONPATH=. .venv/bin/python specaware/sensors/build_catalogue.py

Two kinds of entries:
- multispectral sensors (Sentinel-2A/B MSI, Landsat 7/8/9): centre = response-weighted mean
  wavelength and FWHM = width at half maximum, both measured on the agencies' tabulated spectral
  response curves shipped by `pyrsr` (ESA S2-SRF v3.0, NASA/Ball Landsat RSR tables); the curves
  themselves are stored in the JSON (`responses`) so sensor simulation can use them;
- imaging spectrometers: grids built from the published range, band count, spacing and FWHM of
  each instrument (one segment per spectrometer), marked `"approximate": true`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

DATA = Path(__file__).with_name("data")
# Water-vapour absorption windows (nm); the last one stands for "> 2450 nm" up to the end of the
# solar-reflective range, so that thermal bands (~10-12 um) are not flagged.
ABSORPTION = [[1340.0, 1460.0], [1790.0, 1960.0], [2450.0, 2600.0]]
REFLECTANCE_CAP = 1.5
# Above-cap limit for L1 at-sensor radiance in uW cm-2 sr-1 nm-1: the brightest solar-reflective
# TOA radiance is ~60 in these units, so values beyond 100 are saturated or garbage.
RADIANCE_CAP = 100.0

# name, display name, aliases, gsd m, [(first nm, last nm, count, fwhm nm)...], source
SPECTROMETERS = [
    ("aviris-classic", "AVIRIS-Classic (JPL)", ["aviris", "aviris-c", "avcl"], 20.0,
     [(365.0, 673.0, 32, 10.0), (662.0, 1270.0, 64, 10.0), (1255.0, 1870.0, 64, 10.5),
      (1840.0, 2497.0, 64, 10.5)],
     "JPL AVIRIS: 224 channels, 4 spectrometers (32/64/64/64), ~10 nm sampling and FWHM, "
     "365-2500 nm; ground sampling 20 m from ER-2 (4-8 m from Twin Otter)"),
    ("aviris-ng", "AVIRIS Next Generation (JPL)", ["avng", "aviris_ng", "avirisng"], 5.0,
     [(376.86, 2500.6, 425, 5.6)],
     "JPL AVIRIS-NG: 425 channels 380-2510 nm at ~5 nm sampling, FWHM ~5.5 nm; GSD 0.3-8 m"),
    ("aviris-3", "AVIRIS-3 (JPL)", ["av3", "aviris3"], 5.0,
     [(390.0, 2490.0, 284, 8.0)],
     "JPL AVIRIS-3: 284 channels at ~7.4 nm sampling over ~390-2500 nm; GSD depends on altitude"),
    ("enmap", "EnMAP HSI (DLR)", ["enmap-hsi"], 30.0,
     [(418.2, 993.0, 91, 8.1), (902.5, 2445.5, 133, 12.4)],
     "DLR EnMAP: VNIR 91 bands 420-1000 nm (6.5 nm sampling, FWHM 8.1), SWIR 133 bands "
     "900-2450 nm (10 nm sampling, FWHM 12.5), overlap ~900-1000 nm; GSD 30 m"),
    ("prisma", "PRISMA (ASI)", [], 30.0,
     [(400.0, 1010.0, 66, 11.0), (920.0, 2505.0, 173, 11.0)],
     "ASI PRISMA: VNIR 66 bands 400-1010 nm, SWIR 173 bands 920-2505 nm, <=12 nm FWHM; GSD 30 m"),
    ("emit", "EMIT (NASA/JPL, ISS)", [], 60.0,
     [(381.0, 2493.0, 285, 8.5)],
     "NASA EMIT: 285 bands 381-2493 nm at ~7.4 nm sampling, FWHM ~8.5 nm; GSD ~60 m"),
    ("hyperion", "EO-1 Hyperion (NASA)", ["eo1-hyperion", "eo-1"], 30.0,
     [(355.59, 1057.68, 70, 11.0), (851.92, 2577.08, 172, 11.0)],
     "NASA EO-1 Hyperion: 242 bands, VNIR 1-70 (355.6-1057.7 nm), SWIR 71-242 "
     "(851.9-2577.1 nm), ~10 nm sampling and FWHM; GSD 30 m"),
    ("desis", "DESIS (DLR, ISS)", [], 30.0,
     [(400.0, 996.7, 235, 3.5)],
     "DLR DESIS: 235 bands 400-1000 nm at 2.55 nm sampling, FWHM ~3.5 nm; GSD 30 m"),
]

# name, display, aliases, pyrsr dir, [(band name, pyrsr band, band gsd)], default gsd, source
MULTISPECTRAL = [
    ("sentinel-2a", "Sentinel-2A MSI (ESA)", ["s2a", "sentinel2a", "s2", "sentinel-2", "sentinel2"], "Sentinel-2A/MSI",
     [("B1", "1", 60), ("B2", "2", 10), ("B3", "3", 10), ("B4", "4", 10), ("B5", "5", 20),
      ("B6", "6", 20), ("B7", "7", 20), ("B8", "8", 10), ("B8A", "8A", 20), ("B9", "9", 60),
      ("B10", "10", 60), ("B11", "11", 20), ("B12", "12", 20)], 10.0,
     "ESA Sentinel-2 spectral response functions COPE-GSEG-EOPG-TN-15-0007 v3.0 (via pyrsr)"),
    ("sentinel-2b", "Sentinel-2B MSI (ESA)", ["s2b", "sentinel2b"], "Sentinel-2B/MSI",
     [("B1", "1", 60), ("B2", "2", 10), ("B3", "3", 10), ("B4", "4", 10), ("B5", "5", 20),
      ("B6", "6", 20), ("B7", "7", 20), ("B8", "8", 10), ("B8A", "8A", 20), ("B9", "9", 60),
      ("B10", "10", 60), ("B11", "11", 20), ("B12", "12", 20)], 10.0,
     "ESA Sentinel-2 spectral response functions COPE-GSEG-EOPG-TN-15-0007 v3.0 (via pyrsr)"),
    ("landsat-8", "Landsat 8 OLI/TIRS (NASA/USGS)", ["l8", "landsat8", "oli"],
     "Landsat-8/OLI_TIRS",
     [(f"B{i}", str(i), {8: 15, 10: 100, 11: 100}.get(i, 30)) for i in range(1, 12)], 30.0,
     "NASA/Ball Landsat 8 OLI and TIRS relative spectral response v1.2 (via pyrsr)"),
    ("landsat-9", "Landsat 9 OLI-2/TIRS-2 (NASA/USGS)", ["l9", "landsat9", "oli-2"],
     "Landsat-9/OLI_TIRS",
     [(f"B{i}", str(i), {8: 15, 10: 100, 11: 100}.get(i, 30)) for i in range(1, 12)], 30.0,
     "NASA/Ball Landsat 9 OLI-2 and TIRS-2 relative spectral response v1.0 (via pyrsr)"),
    ("landsat-7", "Landsat 7 ETM+ (NASA/USGS)", ["l7", "landsat7", "etm+", "etm"],
     "Landsat-7/ETM+",
     [("B1", "1", 30), ("B2", "2", 30), ("B3", "3", 30), ("B4", "4", 30), ("B5", "5", 30),
      ("B6", "6L", 60), ("B7", "7", 30), ("B8", "8", 15)], 30.0,
     "NASA Landsat 7 ETM+ relative spectral response (via pyrsr); B6 = low-gain thermal curve"),
]


def _grid(segments):
    wl, fw = [], []
    for first, last, count, fwhm in segments:
        wl += np.linspace(first, last, count).round(2).tolist()
        fw += [fwhm] * count
    return wl, fw


def _curve(path: Path):
    """Tabulated response -> (centre nm, fwhm nm, wavelength grid nm, normalised response)."""
    table = np.loadtxt(path, skiprows=1)
    wl, r = table[:, 0], table[:, 1] / table[:, 1].max()
    if wl.max() < 100:  # pyrsr stores Landsat curves in micrometres
        wl = wl * 1000.0
    centre = float((wl * r).sum() / r.sum())
    above = np.flatnonzero(r >= 0.5)
    lo, hi = above[0], above[-1]
    # Interpolate the half-maximum crossings between the samples on either side.
    left = wl[lo] if lo == 0 else np.interp(0.5, [r[lo - 1], r[lo]], [wl[lo - 1], wl[lo]])
    right = wl[hi] if hi == len(r) - 1 else np.interp(
        0.5, [r[hi + 1], r[hi]], [wl[hi + 1], wl[hi]])
    keep = np.flatnonzero(r >= 1e-3)
    wl, r = wl[keep[0]:keep[-1] + 1], r[keep[0]:keep[-1] + 1]
    stride = max(1, len(wl) // 400)  # thermal curves are 5000 samples at 1 nm
    return centre, float(right - left), wl[::stride], r[::stride]


def _levels(reflectance_l1: bool):
    if reflectance_l1:
        units = {"L1": "top-of-atmosphere reflectance", "L2": "surface reflectance"}
        caps = {"L1": REFLECTANCE_CAP, "L2": REFLECTANCE_CAP}
    else:
        units = {"L1": "radiance uW cm-2 sr-1 nm-1", "L2": "surface reflectance"}
        caps = {"L1": RADIANCE_CAP, "L2": REFLECTANCE_CAP}
    return units, caps


def build() -> list[dict]:
    entries = []
    for name, display, aliases, gsd, segments, source in SPECTROMETERS:
        wl, fw = _grid(segments)
        units, caps = _levels(False)
        entries.append(dict(
            name=name, display_name=display, aliases=aliases, approximate=True, source=source,
            gsd=gsd, levels=["L1", "L2"], value_units=units, value_caps=caps,
            absorption_ranges=ABSORPTION, band_names=[f"B{i + 1:03d}" for i in range(len(wl))],
            wavelength=wl, fwhm=fw))
    import pyrsr
    root = Path(pyrsr.__path__[0]) / "data"
    for name, display, aliases, folder, bands, gsd, source in MULTISPECTRAL:
        wl, fw, gsds, responses = [], [], [], {}
        for band, file, band_gsd in bands:
            centre, width, grid, resp = _curve(root / folder / f"band_{file}")
            wl.append(round(centre, 2))
            fw.append(round(width, 2))
            gsds.append(float(band_gsd))
            responses[band] = {"wavelength": grid.round(2).tolist(),
                               "response": resp.round(5).tolist()}
        units, caps = _levels(True)
        entries.append(dict(
            name=name, display_name=display, aliases=aliases, approximate=False, source=source,
            gsd=gsd, levels=["L1", "L2"], value_units=units, value_caps=caps,
            absorption_ranges=ABSORPTION, band_names=[b[0] for b in bands], band_gsd=gsds,
            wavelength=wl, fwhm=fw, responses=responses))
    return entries


def main() -> None:
    DATA.mkdir(exist_ok=True)
    for entry in build():
        path = DATA / f"{entry['name']}.json"
        path.write_text(json.dumps(entry, indent=1) + "\n")
        print(f"{path.name}: {len(entry['wavelength'])} bands")


if __name__ == "__main__":
    main()
