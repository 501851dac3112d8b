"""The demo's labelled scenes of one sensor as a .mat pixel-classification benchmark.

Hyperspectral pixel classification is benchmarked on one cube with a ground-truth map (Indian
Pines and its kin, `finetune/datasets/mat.py`). The demo writes labelled synthetic scenes per
sensor and date (`data/synth/synth_manifest.json`); this puts the scenes of one sensor and date
side by side into that form, so every .mat protocol (k-shot grids, active learning) runs on the
demo without outside data:

    OUT/demo_scene.mat   demo_scene [H, W_1 + ... + W_s, C] float32 (physical units, the
                         scenes' nodata filled with the scene's band mean), wavelength [C] nm,
                         fwhm [C] nm
    OUT/demo_gt.mat      demo_gt [H, W] uint8: 0 unlabelled, 1..K the manifest's classes

read by `data.benchmark=specaware_demo` (configs/finetune/demo_pixels.yaml). The class numbers
keep the manifest's order, so class names match even when a class is absent from the scenes.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio

from specaware.data.raster import open_scene, read_window

IMAGE_KEY, GT_KEY = "demo_scene", "demo_gt"


def demo_scenes(demo: str | Path, sensor: str, date: str) -> tuple[list[dict], list[str]]:
    """(manifest rows of `sensor` at `date` in scene order, class names) of a demo folder."""
    manifest = Path(demo) / "data" / "synth" / "synth_manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} not found: pass the folder of a `specaware demo` "
                                "run (its data stage writes data/synth/)")
    meta = json.loads(manifest.read_text())
    rows = [s for s in meta["scenes"] if s["sensor"] == sensor and s["date"] == date]
    if not rows:
        have = sorted({(s["sensor"], s["date"]) for s in meta["scenes"]})
        raise ValueError(f"{manifest}: no labelled scene of sensor {sensor!r} at date {date!r}; "
                         f"it holds {have}")
    return sorted(rows, key=lambda s: s["id"]), list(meta["classes"])


def read_labelled(root: Path, row: dict) -> tuple[np.ndarray, np.ndarray, object]:
    """(cube [H, W, C] float32 with nodata filled, gt [H, W] uint8 0 = unlabelled, scene)."""
    scene = open_scene(root / row["image"])
    with rasterio.open(root / row["image"]) as src:
        data, nodata = read_window(src, scene, rasterio.windows.Window(0, 0, src.width,
                                                                       src.height))
    valid = ~nodata
    counts = np.maximum(valid.sum((1, 2)), 1)
    mean = np.where(valid, data, 0).sum((1, 2)) / counts           # [C]
    data = np.where(valid, data, mean[:, None, None])
    with rasterio.open(root / row["labels"]) as src:
        labels = src.read(1)
        ignore = src.nodata if src.nodata is not None else 255
    gt = np.where((labels == ignore) | nodata.any(0), 0, labels.astype(np.int64) + 1)
    return np.moveaxis(data, 0, -1).astype(np.float32), gt.astype(np.uint8), scene


def write_pixel_benchmark(demo: str | Path, out: str | Path, sensor: str = "aviris-ng",
                          date: str = "t1") -> dict:
    """Write OUT/demo_scene.mat + OUT/demo_gt.mat; returns {"image", "gt", "shape", "classes",
    "labelled": per-class pixel counts}."""
    from scipy.io import savemat
    rows, classes = demo_scenes(demo, sensor, date)
    root = Path(demo) / "data" / "synth"
    parts = [read_labelled(root, row) for row in rows]
    heights = {cube.shape[0] for cube, _, _ in parts}
    if len(heights) != 1:
        raise ValueError(f"{root}: the {sensor} scenes differ in height {sorted(heights)}; "
                         "they are put side by side and must share it")
    cube = np.concatenate([p[0] for p in parts], axis=1)
    gt = np.concatenate([p[1] for p in parts], axis=1)
    scene = parts[0][2]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    image_path, gt_path = out / f"{IMAGE_KEY}.mat", out / f"{GT_KEY}.mat"
    savemat(image_path, {IMAGE_KEY: cube, "wavelength": scene.wavelength.astype(np.float64),
                         "fwhm": scene.fwhm.astype(np.float64)}, do_compression=True)
    savemat(gt_path, {GT_KEY: gt}, do_compression=True)
    counts = {name: int((gt == i + 1).sum()) for i, name in enumerate(classes)}
    return {"image": str(image_path), "gt": str(gt_path), "shape": list(cube.shape),
            "classes": classes, "labelled": counts}
