"""The classic hyperspectral benchmarks as users have them: MATLAB .mat files (docs/DESIGN.md section 5).

Public files store the cube as [H, W, C] and the ground truth as [H, W] integers. Classification
benchmarks use 0 = unlabelled and 1..K = classes (we map to -1 and 0..K-1). Change benchmarks
differ: Hermiston, Farmland and River maps label every pixel (0 = no change, non-zero = change;
River uses 255), while Bay Area and Santa Barbara use 0 = unlabelled, 1 = change, 2 = no change.
Key names differ between copies of the same data set, so each benchmark lists the names seen in
the public copies; `image_key=`/`gt_key=` override them, and an error lists what the file holds.
Houston 2013 (GRSS Data Fusion Contest 2013) ships a fixed split instead of one ground truth: a
training map and a test map on the cube's grid (TRLabel.mat / TSLabel.mat, or houston_gt_tr and
houston_gt_te in one houston_gt.mat); `test_gt=` loads the test map (`test_gt_key=` overrides).

    scene = load_benchmark("indian_pines", "Indian_pines_corrected.mat", "Indian_pines_gt.mat")
    fixed = load_benchmark("houston2013", "Houston.mat", "TRLabel.mat", test_gt="TSLabel.mat")
    pair = load_change_benchmark("bay_area", "Bay_Area_2013.mat", "Bay_Area_2015.mat",
                                 "bayArea_gtChanges2.mat")
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from specaware.data.band_metadata import estimate_fwhm, read_wavelength_file, unit_factor
from specaware.data.normalize import normalize_scene
from specaware.finetune.datasets import wavelengths as wltab
from specaware.finetune.datasets.protocol import check_disjoint
from specaware.finetune.datasets.scene import IGNORE, ChangeScene, HSIScene, LabelledScene

log = logging.getLogger(__name__)
WAVELENGTH_KEYS = ("wavelength", "wavelengths", "wl", "lambda")
FWHM_KEYS = ("fwhm", "bandwidth")


@dataclass(frozen=True)
class Benchmark:
    name: str
    task: str                      # "classification" | "change"
    table: str                     # wavelengths.table kind
    sensor: str
    gsd: float                     # metres
    image_keys: tuple[str, ...]    # candidates, first present wins (t1 for change)
    gt_keys: tuple[str, ...]
    t2_keys: tuple[str, ...] = ()
    labels: str = "zero_unlabelled"  # | "all_labelled" | "bay_area"
    class_names: tuple[str, ...] = ()
    train_keys: tuple[str, ...] = ("TRLabel", "TR")   # fixed split's training map, then gt_keys
    test_keys: tuple[str, ...] = ("TSLabel", "TeLabel", "TE")   # ... and its test map


_IP = ("Alfalfa", "Corn-notill", "Corn-mintill", "Corn", "Grass-pasture", "Grass-trees",
       "Grass-pasture-mowed", "Hay-windrowed", "Oats", "Soybean-notill", "Soybean-mintill",
       "Soybean-clean", "Wheat", "Woods", "Buildings-Grass-Trees-Drives", "Stone-Steel-Towers")
_PU = ("Asphalt", "Meadows", "Gravel", "Trees", "Painted metal sheets", "Bare soil", "Bitumen",
       "Self-blocking bricks", "Shadows")
_SA = ("Broccoli green weeds 1", "Broccoli green weeds 2", "Fallow", "Fallow rough plow",
       "Fallow smooth", "Stubble", "Celery", "Grapes untrained", "Soil vineyard develop",
       "Corn senesced green weeds", "Lettuce romaine 4wk", "Lettuce romaine 5wk",
       "Lettuce romaine 6wk", "Lettuce romaine 7wk", "Vineyard untrained",
       "Vineyard vertical trellis")
_HO = ("Healthy grass", "Stressed grass", "Synthetic grass", "Trees", "Soil", "Water",
       "Residential", "Commercial", "Road", "Highway", "Railway", "Parking lot 1",
       "Parking lot 2", "Tennis court", "Running track")
_LK = ("Corn", "Cotton", "Sesame", "Broad-leaf soybean", "Narrow-leaf soybean", "Rice", "Water",
       "Roads and houses", "Mixed weed")
_CHANGE = ("no change", "change")
_DEMO = ("water", "forest", "grassland", "dry_vegetation", "bare_soil", "rock", "built",
         "burned")   # synth/spectra.py CLASSES

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in [
    Benchmark("indian_pines", "classification", "indian_pines", "aviris-classic", 20.0,
              ("indian_pines_corrected", "indian_pines"), ("indian_pines_gt",), class_names=_IP),
    Benchmark("pavia_university", "classification", "rosis", "rosis", 1.3,
              ("paviaU", "pavia_u"), ("paviaU_gt", "pavia_u_gt"), class_names=_PU),
    Benchmark("pavia_centre", "classification", "rosis", "rosis", 1.3, ("pavia",),
              ("pavia_gt",), class_names=("Water", "Trees", "Asphalt", "Self-blocking bricks",
                                          "Bitumen", "Tiles", "Shadows", "Meadows", "Bare soil")),
    Benchmark("salinas", "classification", "salinas", "aviris-classic", 3.7,
              ("salinas_corrected", "salinas"), ("salinas_gt",), class_names=_SA),
    Benchmark("houston2013", "classification", "casi", "casi-1500", 2.5,
              ("houston", "houston2013", "hsi", "data"),
              ("houston_gt", "houston2013_gt", "gt", "label", "tr_te"), class_names=_HO,
              train_keys=("houston_gt_tr", "TRLabel", "TR"),
              test_keys=("houston_gt_te", "TSLabel", "TeLabel", "TE")),
    Benchmark("whu_hi_longkou", "classification", "headwall_nano", "headwall-nano", 0.463,
              ("WHU_Hi_LongKou",), ("WHU_Hi_LongKou_gt",), class_names=_LK),
    Benchmark("whu_hi_hanchuan", "classification", "headwall_nano", "headwall-nano", 0.109,
              ("WHU_Hi_HanChuan",), ("WHU_Hi_HanChuan_gt",)),
    Benchmark("whu_hi_honghu", "classification", "headwall_nano", "headwall-nano", 0.043,
              ("WHU_Hi_HongHu",), ("WHU_Hi_HongHu_gt",)),
    # `specaware demo`'s labelled AVIRIS-NG scenes side by side (demo/pixel_mat.py); the file
    # stores its wavelengths, so the table is never used
    Benchmark("specaware_demo", "classification", "aviris", "aviris-ng", 5.0, ("demo_scene",),
              ("demo_gt",), class_names=_DEMO),
    Benchmark("hermiston", "change", "hyperion", "hyperion", 30.0,
              ("T1", "HypeRvieW", "hermiston2004"), ("Binary", "label", "gt5clasesHermiston", "gt"),
              ("T2", "HypeRvieW", "hermiston2007"), "all_labelled", _CHANGE),
    Benchmark("farmland", "change", "hyperion", "hyperion", 30.0,
              ("T1", "imgh", "farm06", "farm1"), ("Binary", "label", "GTChina1", "gt"),
              ("T2", "imghl", "farm07", "farm2"), "all_labelled", _CHANGE),
    Benchmark("river", "change", "hyperion", "hyperion", 30.0,
              ("river_before", "T1"), ("lakelabel_v1", "groundtruth", "gt", "label"),
              ("river_after", "T2"), "all_labelled", _CHANGE),
    Benchmark("bay_area", "change", "aviris", "aviris-classic", 20.0,
              ("HypeRvieW", "T1"), ("HypeRvieW", "gt"), ("HypeRvieW", "T2"), "bay_area", _CHANGE),
    Benchmark("santa_barbara", "change", "aviris", "aviris-classic", 20.0,
              ("HypeRvieW", "T1"), ("HypeRvieW", "gt"), ("HypeRvieW", "T2"), "bay_area", _CHANGE),
]}


def get_benchmark(name: str) -> Benchmark:
    key = name.lower().replace("-", "_").replace(" ", "_")
    if key not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}")
    return BENCHMARKS[key]


def read_mat(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays of a .mat file (MATLAB v5/v7 via scipy; v7.3/HDF5 via h5py when installed)."""
    from scipy.io import loadmat
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file not found: {path}")
    try:
        raw = loadmat(str(path))
    except NotImplementedError:
        return _read_mat73(path)
    return {k: np.asarray(v) for k, v in raw.items() if not k.startswith("__")}


def _read_mat73(path: Path) -> dict[str, np.ndarray]:
    try:
        import h5py
    except ImportError:
        raise ValueError(f"{path} is a MATLAB v7.3 (HDF5) file: `pip install h5py` to read it, "
                         "or re-save it in MATLAB with save(..., '-v7')") from None
    with h5py.File(path, "r") as f:  # HDF5 stores MATLAB arrays transposed
        return {k: np.asarray(v).T for k, v in f.items() if isinstance(v, h5py.Dataset)}


def pick(arrays: dict[str, np.ndarray], candidates, ndim: int, path, what: str,
         key: str | None = None) -> tuple[str, np.ndarray]:
    """The array under `key`, else the first candidate name present (case-insensitive), else the
    only array with `ndim` dimensions; otherwise a clear error listing the file's arrays."""
    lower = {k.lower(): k for k in arrays}
    for name in ([key] if key else list(candidates)):
        if name.lower() in lower and arrays[lower[name.lower()]].ndim == ndim:
            return lower[name.lower()], arrays[lower[name.lower()]]
    shaped = [k for k, v in arrays.items() if v.ndim == ndim]
    if key is None and len(shaped) == 1:
        return shaped[0], arrays[shaped[0]]
    listing = ", ".join(f"{k} {tuple(v.shape)}" for k, v in arrays.items())
    raise KeyError(f"{path}: no {ndim}-D {what} array under {key or list(candidates)}; the file "
                   f"holds: {listing}. Pass the right name, e.g. {what}_key='NAME'")


def _band_table(bench: Benchmark, arrays: dict, bands: int, path, wavelength, fwhm):
    """Wavelengths: given by the user > stored in the file > the benchmark's table."""
    if wavelength is None:
        stored = [arrays[k] for k in arrays if k.lower() in WAVELENGTH_KEYS]
        widths = [arrays[k] for k in arrays if k.lower() in FWHM_KEYS]
        if stored:
            wavelength, fwhm = stored[0], (widths[0] if widths else None)
    if isinstance(wavelength, (str, Path)):
        wavelength, fwhm = read_wavelength_file(wavelength, str(path))
    if wavelength is not None:
        wl = np.asarray(wavelength, np.float64).reshape(-1)
        factor = unit_factor(None, wl, str(path))      # micrometres below 30, as for rasters
        wl = wl * factor
        fw = estimate_fwhm(wl) if fwhm is None else np.asarray(fwhm, np.float64).reshape(-1) * factor
        approx = False
    else:
        wl, fw, approx = wltab.table(bench.table, bands)
        if approx:
            log.warning("%s: using the approximate %s band table (%d bands); pass wavelength= "
                        "for exact band centres", path, bench.table, bands)
    if len(wl) != bands:
        raise ValueError(f"{path}: the cube has {bands} bands but the {bench.name} wavelength "
                         f"table has {len(wl)}; pass wavelength=[...] (nm) with one value per band")
    return np.asarray(wl, np.float32), np.asarray(fw, np.float32), approx


def _scene(bench: Benchmark, arrays: dict, cube: np.ndarray, path, wavelength, fwhm,
           norm: str, name: str) -> HSIScene:
    if cube.ndim != 3:
        raise ValueError(f"{path}: expected an [H, W, C] cube, got shape {cube.shape}")
    image = np.ascontiguousarray(np.moveaxis(cube, -1, 0)).astype(np.float32)
    wl, fw, approx = _band_table(bench, arrays, image.shape[0], path, wavelength, fwhm)
    image, how = normalize_scene(image, norm, str(path))
    return HSIScene(image, wl, fw, bench.gsd, bench.sensor, "L2", name, approx,
                    {"source": str(path), "normalization": how})


def _labels(bench: Benchmark, gt: np.ndarray, path, num_classes: int | None):
    gt = np.asarray(gt).astype(np.int64)
    if bench.labels == "zero_unlabelled":
        labels = np.where(gt > 0, gt - 1, IGNORE)
        names = list(bench.class_names) or [f"class_{i + 1}" for i in range(int(gt.max()))]
        if num_classes:
            names = names[:num_classes] + [f"class_{i + 1}" for i in range(len(names), num_classes)]
        if labels.max() >= len(names):
            raise ValueError(f"{path}: label {int(gt.max())} exceeds the {len(names)} classes of "
                             f"{bench.name}; is this the right ground-truth file?")
        return labels, names
    if bench.labels == "bay_area":  # 0 unlabelled, 1 change, 2 no change
        labels = np.select([gt == 1, gt == 2], [1, 0], IGNORE)
        return labels, list(_CHANGE)
    values = np.unique(gt)
    if len(values) <= 2 or not num_classes:  # binary: 0 / anything else (River: 255)
        return (gt != 0).astype(np.int64), list(_CHANGE)
    return gt, ["no change"] + [f"change_{v}" for v in range(1, num_classes)]


def load_benchmark(name: str, image: str | Path, gt: str | Path | None = None, *,
                   test_gt: str | Path | None = None, image_key: str | None = None,
                   gt_key: str | None = None, test_gt_key: str | None = None, wavelength=None,
                   fwhm=None, normalize: str = "auto") -> LabelledScene:
    """A classification benchmark: cube [C, H, W] + labels [H, W] (-1 = unlabelled).

    With `test_gt` the benchmark's fixed split: `gt` (default: the image file) is read as the
    training map into `labels` and `test_gt` as the test map into `test_labels`; pass one path
    twice when one file holds both maps. The maps must be disjoint (ValueError naming both).
    """
    bench = get_benchmark(name)
    gt = gt or image
    files = {f: read_mat(f) for f in dict.fromkeys(str(p) for p in (image, gt, test_gt) if p)}
    arrays = files[str(image)]
    _, cube = pick(arrays, bench.image_keys, 3, image, "image", image_key)
    if test_gt is None:
        _, raw = pick(files[str(gt)], bench.gt_keys, 2, gt, "gt", gt_key)
        labels, names = _labels(bench, raw, gt, None)
        test = None
    else:
        labels, test, names = _fixed_maps(bench, files, gt, test_gt, gt_key, test_gt_key)
    scene = _scene(bench, arrays, cube, image, wavelength, fwhm, normalize, bench.name)
    if labels.shape != scene.shape:
        raise ValueError(f"{gt}: ground truth {labels.shape} does not match the image "
                         f"{scene.shape} of {image}")
    return LabelledScene(scene, labels, names, test)


def _fixed_maps(bench: Benchmark, files: dict, gt, test_gt, gt_key, test_gt_key):
    """(training labels, test labels, class names) of a fixed split, checked to be disjoint."""
    train_key, train = pick(files[str(gt)], bench.train_keys + bench.gt_keys, 2, gt, "gt",
                            gt_key)
    test_key, test = pick(files[str(test_gt)], bench.test_keys, 2, test_gt, "test_gt",
                          test_gt_key)
    if str(gt) == str(test_gt) and train_key == test_key:
        raise ValueError(f"{gt}: the training and the test map are both read from {train_key!r};"
                         " name them: gt_key='...' and test_gt_key='...' (data.keys.gt, "
                         "data.keys.test_gt)")
    train, names = _labels(bench, train, gt, None)
    test, test_names = _labels(bench, test, test_gt, None)
    check_disjoint(train, test, (f"{gt} [{train_key}]", f"{test_gt} [{test_key}]"))
    return train, test, max(names, test_names, key=len)


def load_change_benchmark(name: str, t1: str | Path, t2: str | Path | None = None,
                          gt: str | Path | None = None, *, keys: dict | None = None,
                          wavelength=None, fwhm=None, wavelength_t2=None, fwhm_t2=None,
                          num_classes: int | None = None, normalize: str = "auto") -> ChangeScene:
    """A change benchmark: two dates (one file holding T1/T2, or one file each) + change map.

    `keys` may override {"t1": ..., "t2": ..., "gt": ...}; `num_classes` > 2 keeps a
    multi-class change map (e.g. Hermiston's 5 change types) instead of binarising it.
    """
    bench = get_benchmark(name)
    keys = keys or {}
    a1 = read_mat(t1)
    a2 = read_mat(t2) if t2 else a1
    ag = read_mat(gt) if gt else a1
    _, c1 = pick(a1, bench.image_keys, 3, t1, "t1", keys.get("t1"))
    _, c2 = pick(a2, bench.t2_keys, 3, t2 or t1, "t2", keys.get("t2"))
    _, g = pick(ag, bench.gt_keys, 2, gt or t1, "gt", keys.get("gt"))
    s1 = _scene(bench, a1, c1, t1, wavelength, fwhm, normalize, f"{bench.name}/t1")
    s2 = _scene(bench, a2, c2, t2 or t1, wavelength_t2 if wavelength_t2 is not None else wavelength,
                fwhm_t2 if wavelength_t2 is not None else fwhm, normalize, f"{bench.name}/t2")
    if s1.shape != s2.shape or g.shape != s1.shape:
        raise ValueError(f"{bench.name}: t1 {s1.shape}, t2 {s2.shape} and change map {g.shape} "
                         "must cover the same grid")
    labels, names = _labels(bench, g, gt or t1, num_classes)
    return ChangeScene(s1, s2, labels, names)
