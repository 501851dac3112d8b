"""Standard evaluation protocols of the hyperspectral benchmarks.

- Split labelled pixels per class: N per class (e.g. 5, 10, 30) or a fraction (e.g. 1%, 10%),
  with a fixed seed; a class with too few pixels gives at most half of them to training so it
  still has test pixels. The rest is validation (same rule) and test.
- Pixel-wise classification: a P x P patch around each labelled pixel (reflect-padded at the
  borders), the pixel at (P/2, P/2); the classifier pools the token holding it.
- Dense heads on a benchmark: tiles of the scene whose label map keeps only the split's pixels.
- Repeat over seeds and report mean +- std (`metrics.summarize`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset

from specaware.finetune.datasets.scene import IGNORE, ChangeScene, LabelledScene


@dataclass
class Split:
    """Pixel coordinates int64 [M, 2] (row, col) per part."""
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def counts(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in ("train", "val", "test")}


def _take(n_class: int, per_class: int | None, fraction: float | None) -> int:
    if per_class is not None:
        n = min(per_class, n_class // 2) if n_class < 2 * per_class else per_class
    elif fraction is not None:
        n = int(round(fraction * n_class))
    else:
        raise ValueError("give per_class (N labelled pixels per class) or fraction (e.g. 0.1)")
    return max(1, n) if n_class > 1 else 0


def split_pixels(labels: np.ndarray, seed: int, per_class: int | None = None,
                 fraction: float | None = None, val_per_class: int | None = None,
                 val_fraction: float | None = None) -> Split:
    """Stratified split of the labelled pixels (labels >= 0) of a [H, W] map.

    Validation defaults to the same rule as training, taken from what training left over.
    """
    if fraction is not None and not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    if val_per_class is None and val_fraction is None:
        val_per_class, val_fraction = per_class, fraction
    for cls in np.unique(labels[labels >= 0]):
        coords = np.argwhere(labels == cls)
        coords = coords[rng.permutation(len(coords))]
        n_train = _take(len(coords), per_class, fraction)
        rest = coords[n_train:]
        n_val = _take(len(rest), val_per_class, val_fraction) if len(rest) > 1 else 0
        parts["train"].append(coords[:n_train])
        parts["val"].append(rest[:n_val])
        parts["test"].append(rest[n_val:])
    cat = {k: (np.concatenate(v) if v else np.zeros((0, 2), np.int64)).astype(np.int64)
           for k, v in parts.items()}
    return Split(**cat)


def keep_only(labels: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Copy of `labels` with every pixel outside `coords` [M, 2] set to unlabelled (-1)."""
    out = np.full_like(labels, IGNORE)
    out[coords[:, 0], coords[:, 1]] = labels[coords[:, 0], coords[:, 1]]
    return out


class PixelPatches(Dataset):
    """Patch [C, P, P] around each pixel of `coords` [M, 2], labelled with the pixel's class."""

    def __init__(self, scene: LabelledScene, coords: np.ndarray, patch: int):
        if patch < 1:
            raise ValueError(f"patch size must be >= 1, got {patch}")
        self.scene, self.coords, self.patch = scene, np.asarray(coords, np.int64), patch
        lo, hi = patch // 2, patch - patch // 2 - 1
        pad = ((0, 0), (lo, hi), (lo, hi))
        mode = "reflect" if min(scene.scene.shape) > max(lo, hi) else "edge"
        self.padded = np.pad(scene.scene.image, pad, mode=mode)

    def __len__(self) -> int:
        return len(self.coords)

    def __getitem__(self, i: int) -> dict:
        r, c = (int(v) for v in self.coords[i])
        crop = self.padded[:, r:r + self.patch, c:c + self.patch]
        sample = self.scene.scene.sample(crop, np.ones(crop.shape[-2:], bool), pixel=(r, c))
        sample["label"] = int(self.scene.labels[r, c])
        return sample


def tile_windows(shape: tuple[int, int], tile: int, stride: int | None = None):
    """Top-left corners of `tile` x `tile` windows covering an [H, W] grid (last ones flush)."""
    H, W = shape
    stride = stride or tile
    rows = sorted({*range(0, max(H - tile, 0) + 1, stride), max(H - tile, 0)})
    cols = sorted({*range(0, max(W - tile, 0) + 1, stride), max(W - tile, 0)})
    return [(r, c) for r in rows for c in cols]


class SceneTiles(Dataset):
    """Tiles of a labelled scene (segmentation) or a two-date scene (change), with their label
    crops; tiles without any labelled pixel are dropped (they carry no training signal)."""

    def __init__(self, scene: LabelledScene | ChangeScene, labels: np.ndarray, tile: int,
                 stride: int | None = None, keep_empty: bool = False):
        self.scene, self.labels, self.tile = scene, labels, tile
        shape = labels.shape
        tile = min(tile, *shape)
        self.size = tile
        self.windows = [(r, c) for r, c in tile_windows(shape, tile, stride)
                        if keep_empty or (labels[r:r + tile, c:c + tile] >= 0).any()]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict:
        r, c = self.windows[i]
        s = self.size
        window = (slice(None), slice(r, r + s), slice(c, c + s))
        label = self.labels[r:r + s, c:c + s].astype(np.int64)
        if isinstance(self.scene, ChangeScene):
            t1, t2 = self.scene.t1, self.scene.t2
            return {"t1": t1.sample(t1.image[window], window=(r, c)),
                    "t2": t2.sample(t2.image[window], window=(r, c)), "label": label}
        img = self.scene.scene.image[window]
        return {**self.scene.scene.sample(img, window=(r, c)), "label": label}
