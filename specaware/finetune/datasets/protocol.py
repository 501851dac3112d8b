"""Standard evaluation protocols of the hyperspectral benchmarks.

- Split labelled pixels per class: N per class (e.g. 5, 10, 30) or a fraction (e.g. 1%, 10%),
  with a fixed seed; a class with too few pixels gives at most half of them to training so it
  still has test pixels. The rest is validation (same rule) and test.
- Fixed split (Houston 2013, the GRSS Data Fusion Contest 2013 maps): the benchmark's own
  training and test maps; validation is carved from the training map, so seeds vary only
  validation, the model's initialisation and the batch order.
- Pixel-wise classification: a P x P patch around each labelled pixel (reflect-padded at the
  borders), the pixel at (P/2, P/2); the classifier pools the token holding it.
- Dense heads on a benchmark: tiles of the scene whose label map keeps only the split's pixels.
- Repeat over seeds and report mean +- std (`metrics.summarize`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset

from specaware.finetune.datasets.scene import IGNORE, ChangeScene, LabelledScene

log = logging.getLogger(__name__)
FIXED_VAL_FRACTION = 0.1   # fixed split: share of each class's training pixels that validates


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
    return Split(**{k: _cat(v) for k, v in parts.items()})


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return (np.concatenate(parts) if parts else np.zeros((0, 2), np.int64)).astype(np.int64)


def check_disjoint(train_labels: np.ndarray, test_labels: np.ndarray,
                   sources: tuple[str, str] = ("the training map", "the test map")) -> None:
    """A fixed split's two maps [H, W] (-1 = unlabelled) must share their grid and no pixel."""
    a, b = sources
    if train_labels.shape != test_labels.shape:
        raise ValueError(f"the training map {a} is {train_labels.shape} but the test map {b} is "
                         f"{test_labels.shape}: a fixed split's maps cover the same grid")
    both = int(((train_labels >= 0) & (test_labels >= 0)).sum())
    if both:
        raise ValueError(f"{both} pixels are labelled in both the training map {a} and the test "
                         f"map {b}; a fixed split's maps are disjoint: is one of them the whole "
                         "ground truth rather than one part of the split?")


def _warn_untrained(train_labels: np.ndarray, test_labels: np.ndarray, sources: tuple[str, str],
                    class_names: list[str] | None) -> None:
    missing = sorted(set(np.unique(test_labels[test_labels >= 0]).tolist())
                     - set(np.unique(train_labels[train_labels >= 0]).tolist()))
    if missing:
        named = [class_names[k] if class_names and k < len(class_names) else f"class index {k}"
                 for k in missing]
        train, test = sources
        log.warning("test classes %s of %s have no pixel in the training map %s: the model "
                    "cannot predict them, their test pixels count as errors", named, test, train)


def fixed_split(train_labels: np.ndarray, test_labels: np.ndarray, seed: int,
                val_per_class: int | None = None, val_fraction: float | None = None, *,
                sources: tuple[str, str] = ("the training map", "the test map"),
                class_names: list[str] | None = None) -> Split:
    """A benchmark's own split from its training and test maps [H, W] (-1 = unlabelled).

    Test = every labelled pixel of `test_labels`; train and validation = the labelled pixels of
    `train_labels`, validation carved per class with the seed: `val_per_class` or
    `val_fraction` of each class, by default 10 % (at least 1 pixel once a class has 2, never
    more than half of a class under `val_per_class`). Training and test pixels are therefore the
    same for every seed: the seed varies only which training pixels validate (and, in the
    runner, the model's initialisation and batch order), so a spread over seeds is not a spread
    over splits.

    The maps must have one shape and no common labelled pixel (ValueError naming `sources`).
    A test class absent from the training map only warns: the protocol's test set is fixed and
    its pixels are scored as errors, as in the published numbers, instead of being dropped.
    """
    if val_fraction is not None and not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    check_disjoint(train_labels, test_labels, sources)
    _warn_untrained(train_labels, test_labels, sources, class_names)
    if val_per_class is None and val_fraction is None:
        val_fraction = FIXED_VAL_FRACTION
    rng = np.random.default_rng(seed)
    train, val = [], []
    for cls in np.unique(train_labels[train_labels >= 0]):
        coords = np.argwhere(train_labels == cls)
        coords = coords[rng.permutation(len(coords))]
        n_val = _take(len(coords), val_per_class, val_fraction)
        val.append(coords[:n_val])
        train.append(coords[n_val:])
    return Split(_cat(train), _cat(val), _cat([np.argwhere(test_labels >= 0)]))


def keep_only(labels: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Copy of `labels` with every pixel outside `coords` [M, 2] set to unlabelled (-1)."""
    out = np.full_like(labels, IGNORE)
    out[coords[:, 0], coords[:, 1]] = labels[coords[:, 0], coords[:, 1]]
    return out


class PixelPatches(Dataset):
    """Patch [C, P, P] around each pixel of `coords` [M, 2], labelled with the pixel's class in
    `labels` [H, W] (default `scene.labels`; a fixed split's test pixels: `scene.test_labels`)."""

    def __init__(self, scene: LabelledScene, coords: np.ndarray, patch: int,
                 labels: np.ndarray | None = None):
        if patch < 1:
            raise ValueError(f"patch size must be >= 1, got {patch}")
        self.scene, self.coords, self.patch = scene, np.asarray(coords, np.int64), patch
        self.labels = scene.labels if labels is None else labels
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
        sample["label"] = int(self.labels[r, c])
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
