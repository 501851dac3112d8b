"""Small generated data laid out like the public files: .mat benchmarks (scipy.io.savemat, the
public key names, [H, W, C] cubes, 0 = unlabelled), GeoTIFFs with wavelength tags, change pairs.

Classes differ by where their reflectance peaks, so a model that reads spectra separates them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from scipy.io import savemat


def class_spectra(wavelength: np.ndarray, k: int) -> np.ndarray:
    """[k, C] reflectance: a Gaussian bump per class at evenly spread centres."""
    lo, hi = float(wavelength.min()), float(wavelength.max())
    centres = np.linspace(lo + 0.15 * (hi - lo), hi - 0.15 * (hi - lo), k)
    width = 0.12 * (hi - lo)
    return 0.15 + 0.5 * np.exp(-((wavelength[None] - centres[:, None]) / width) ** 2)


def class_layout(h: int, w: int, k: int, seed: int = 0, block: int = 8) -> np.ndarray:
    """[H, W] classes 0..k-1 in square blocks, every class in turn so all of them appear."""
    rng = np.random.default_rng(seed)
    nb = (-(-h // block), -(-w // block))
    blocks = rng.permutation(np.arange(nb[0] * nb[1]) % k).reshape(nb)
    return np.kron(blocks, np.ones((block, block), np.int64))[:h, :w]


def cube_from_layout(layout: np.ndarray, wavelength: np.ndarray, k: int, seed: int = 0,
                     noise: float = 0.02) -> np.ndarray:
    """[H, W, C] float reflectance for a class layout."""
    rng = np.random.default_rng(seed + 1)
    spectra = class_spectra(wavelength, k)
    return spectra[layout] + rng.normal(0, noise, (*layout.shape, len(wavelength)))


def write_indian_pines(folder: Path, h: int = 24, w: int = 24, k: int = 4,
                       seed: int = 0) -> tuple[Path, Path]:
    """Indian_pines_corrected.mat (uint16 x10000, [H, W, 200]) + Indian_pines_gt.mat (0 = none)."""
    from specaware.finetune.datasets.wavelengths import indian_pines
    wl = indian_pines()[0]
    layout = class_layout(h, w, k, seed)
    cube = np.clip(cube_from_layout(layout, wl, k, seed) * 10000, 0, 65535).astype(np.uint16)
    gt = (layout + 1).astype(np.uint8)
    gt[:, :2] = 0  # an unlabelled strip, as in the public ground truth
    image, labels = folder / "Indian_pines_corrected.mat", folder / "Indian_pines_gt.mat"
    savemat(image, {"indian_pines_corrected": cube})
    savemat(labels, {"indian_pines_gt": gt})
    return image, labels


def write_houston_split(folder: Path, h: int = 16, w: int = 16, k: int = 3, seed: int = 0,
                        one_file: bool = False) -> tuple[Path, Path, Path]:
    """Houston.mat ('Houston', uint16 x10000, [H, W, 144]) + the contest's disjoint maps
    TRLabel.mat / TSLabel.mat (0 = unlabelled, 1..k; about a third of the labelled pixels train,
    the rest test). one_file: both maps in houston_gt.mat as houston_gt_tr / houston_gt_te.
    Returns (image, training map file, test map file)."""
    from specaware.finetune.datasets.wavelengths import table
    wl = table("casi", 144)[0]
    layout = class_layout(h, w, k, seed)
    cube = np.clip(cube_from_layout(layout, wl, k, seed) * 10000, 0, 65535).astype(np.uint16)
    draw = np.random.default_rng(seed + 2).random((h, w))
    train = np.where(draw < 0.3, layout + 1, 0).astype(np.uint8)
    test = np.where((draw >= 0.3) & (draw < 0.9), layout + 1, 0).astype(np.uint8)
    image = folder / "Houston.mat"
    savemat(image, {"Houston": cube})
    if one_file:
        savemat(folder / "houston_gt.mat", {"houston_gt_tr": train, "houston_gt_te": test})
        return image, folder / "houston_gt.mat", folder / "houston_gt.mat"
    savemat(folder / "TRLabel.mat", {"TRLabel": train})
    savemat(folder / "TSLabel.mat", {"TSLabel": test})
    return image, folder / "TRLabel.mat", folder / "TSLabel.mat"


def change_pair(h: int, w: int, wl1: np.ndarray, wl2: np.ndarray, seed: int = 0,
                block: int = 8, share: float = 0.3):
    """Two dates of one field layout where about `share` of the fields (blocks) switch class by
    the second date, as when a field changes crop -> (cube1 [H, W, C1], cube2 [H, W, C2],
    change mask [H, W] 0/1)."""
    rng = np.random.default_rng(seed)
    before = class_layout(h, w, 3, seed, block)
    nb = (-(-h // block), -(-w // block))
    changed = np.kron(rng.random(nb) < share, np.ones((block, block), bool))[:h, :w]
    after = np.where(changed, (before + 1) % 3, before)
    return (cube_from_layout(before, wl1, 3, seed), cube_from_layout(after, wl2, 3, seed + 7),
            changed.astype(np.int64))


def write_bay_area(folder: Path, h: int = 32, w: int = 32, seed: int = 0):
    """Bay_Area_2013.mat / Bay_Area_2015.mat ('HypeRvieW', [H, W, 224]) + gt (0 none, 1 change,
    2 no change)."""
    from specaware.finetune.datasets.wavelengths import aviris_classic
    wl = aviris_classic()[0]
    c1, c2, mask = change_pair(h, w, wl, wl, seed)
    gt = np.where(mask == 1, 1, 2).astype(np.uint8)
    gt[:3] = 0
    names = ("Bay_Area_2013.mat", "Bay_Area_2015.mat", "bayArea_gtChanges2.mat")
    paths = [folder / n for n in names]
    for p, arr in zip(paths, ((c1 * 1000).astype(np.int16), (c2 * 1000).astype(np.int16), gt)):
        savemat(p, {"HypeRvieW": arr})
    return paths


def write_geotiff(path: Path, image: np.ndarray, wavelength: np.ndarray | None,
                  crs: str = "EPSG:32611", origin=(500000.0, 4200000.0), gsd: float = 30.0,
                  nodata=None) -> Path:
    """[C, H, W] float32 GeoTIFF; per-band `wavelength` tags in nm when given."""
    c, h, w = image.shape
    profile = {"driver": "GTiff", "height": h, "width": w, "count": c, "dtype": image.dtype.name,
               "crs": crs, "transform": from_origin(*origin, gsd, gsd), "nodata": nodata}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(image)
        if wavelength is not None:
            for i, v in enumerate(wavelength, start=1):
                ds.update_tags(i, wavelength=f"{v:.2f}", fwhm="10.0")
    return path


def write_mask(path: Path, mask: np.ndarray, crs: str = "EPSG:32611",
               origin=(500000.0, 4200000.0), gsd: float = 30.0) -> Path:
    profile = {"driver": "GTiff", "height": mask.shape[0], "width": mask.shape[1], "count": 1,
               "dtype": "uint8", "crs": crs, "transform": from_origin(*origin, gsd, gsd)}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(mask.astype(np.uint8)[None])
    return path


def write_segmentation_pair(folder: Path, h: int = 48, w: int = 48, bands: int = 12, k: int = 3,
                            seed: int = 0) -> tuple[Path, Path]:
    """image.tif (bands 450..2400 nm tagged) + mask.tif (0 = unlabelled, 1..k)."""
    wl = np.linspace(450, 2400, bands)
    layout = class_layout(h, w, k, seed)
    cube = cube_from_layout(layout, wl, k, seed).astype(np.float32)
    image = write_geotiff(folder / "image.tif", np.moveaxis(cube, -1, 0).copy(), wl)
    return image, write_mask(folder / "mask.tif", layout + 1)


def write_export(folder: Path, seed: int = 0, stem: str = "export"):
    """An export as `specaware export` writes it: STEM.safetensors (whole MAE) + STEM.json.
    Returns (path, model) so tests can compare against the model that was saved."""
    import json

    import torch
    from safetensors.torch import save_file

    from specaware.config import to_dict
    from specaware.finetune import api
    torch.manual_seed(seed)
    model = api.build_model(None, "specaware_debug")
    path = folder / f"{stem}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    meta = {"format": "specaware-export/1", "model": "specaware_debug",
            "model_config": to_dict(model.config), "step": 7, "train_config": {}}
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path, model


def mat_task(folder: Path, h: int, w: int, k: int = 3):
    """A pretrained export (FOLDER/export/) and a small Indian-Pines-layout .mat scene in
    `folder`: (export path, image path, gt path), for runs of the indian_pines config."""
    (folder / "export").mkdir()
    export, _ = write_export(folder / "export")
    image, gt = write_indian_pines(folder, h=h, w=w, k=k)
    return export, image, gt


def mat_cli_args(out: Path, export: Path, image: Path, gt: Path) -> list:
    """`specaware finetune` arguments of a quiet indian_pines run on `mat_task`'s files."""
    config = Path(__file__).parents[2] / "configs" / "finetune" / "indian_pines.yaml"
    return ["--config", config, "--out", out, "--checkpoint", export, "--no-progress",
            f"data.image={image}", f"data.gt={gt}", "protocol.patch=16"]


def sample(c: int = 10, h: int = 8, w: int = 8, lo: float = 450, hi: float = 2400, seed: int = 0,
           label=None) -> dict:
    """One random sample dict of the data contract."""
    rng = np.random.default_rng(seed)
    out = {"image": rng.random((c, h, w), dtype=np.float32),
           "wavelength": np.linspace(lo, hi, c).astype(np.float32),
           "fwhm": np.full(c, 10.0, np.float32), "gsd": 30.0, "sensor": "unknown", "level": "L2"}
    if label is not None:
        out["label"] = label
    return out
