"""Scene classification data: a folder of labelled tiles, or webdataset shards with labels.

Folder layout (one sub-folder per class, names sorted give class indices):

    root/forest/tile_001.tif
    root/water/tile_017.tif

Tiles are any GDAL raster carrying wavelengths (or give the sensor / a wavelength file); tiles
smaller than the largest are zero-padded (and marked invalid) so a batch has one size.
Shards are those of `specaware shard` (INTERFACES.md "Shards") whose samples carry a label in
`meta.label`; they stream through `specaware.data.stream.make_loader`.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from specaware.data.reader import RasterReader
from specaware.finetune.datasets.geotiff import KEYS

log = logging.getLogger(__name__)
RASTER_SUFFIXES = {".tif", ".tiff", ".img", ".dat", ".nc", ".vrt"}


class TileFolder(Dataset):
    """`root/<class>/<tile>` rasters -> sample dicts with an integer `label`."""

    def __init__(self, root: str | Path, sensor: str = "", wavelength: str = "",
                 normalize: str = "auto", tile: int = 0):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"tile folder not found: {root}")
        self.class_names = sorted(d.name for d in root.iterdir() if d.is_dir())
        if len(self.class_names) < 2:
            raise ValueError(f"{root}: needs one sub-folder per class (at least 2), found "
                             f"{self.class_names}")
        self.items = [(p, k) for k, name in enumerate(self.class_names)
                      for p in sorted((root / name).iterdir())
                      if p.suffix.lower() in RASTER_SUFFIXES]
        if not self.items:
            raise ValueError(f"{root}: no raster tiles ({', '.join(sorted(RASTER_SUFFIXES))}) "
                             "inside the class folders")
        self.infos = [RasterReader.open(p, sensor, wavelength, normalize, keys=KEYS)
                      for p, _ in self.items]
        self.size = tile or max(max(i.shape) for i in self.infos)

    @property
    def labels(self) -> np.ndarray:
        return np.array([k for _, k in self.items])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        info, s = self.infos[i], self.size
        h, w = min(s, info.shape[0]), min(s, info.shape[1])
        sample = info.read(0, 0, h, w)
        if (h, w) != (s, s):  # pad to the batch size, padding marked invalid
            pad = ((0, 0), (0, s - h), (0, s - w))
            sample["image"] = np.pad(sample["image"], pad)
            sample["valid"] = np.pad(sample["valid"], pad, constant_values=False)
        sample["label"] = self.items[i][1]
        return sample


def stratified_split(labels: np.ndarray, seed: int, val_fraction: float,
                     test_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays (train, val, test) with each class split by the same fractions."""
    rng = np.random.default_rng(seed)
    parts: tuple[list, list, list] = ([], [], [])
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_test = int(round(test_fraction * len(idx)))
        n_val = int(round(val_fraction * len(idx)))
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test:n_test + n_val])
        parts[0].append(idx[n_test + n_val:])
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in parts)


class LabelledShards:
    """Batches of labelled shard samples: `label` LongTensor [B] (scene) or [B, H, W] (mask).

    Wraps `specaware.data.stream.make_loader(mode="eval")` (exact single pass, skips counted);
    a batch without labels is an error naming the source, never a silent zero label.
    """

    def __init__(self, source: str, batch_size: int, mode: str = "eval", seed: int = 0,
                 num_workers: int = 0, label_key: str = "label", rank: int = 0,
                 world_size: int = 1):
        from specaware.data.stream import make_loader
        self.source, self.label_key = source, label_key
        # eval mode: every sample exactly once over all ranks (stream.py), this rank's share
        self.loader = make_loader(source, mode=mode, batch_size=batch_size,
                                  num_workers=num_workers, seed=seed, shuffle_buffer=0 if mode ==
                                  "eval" else 256, views=None, max_skip_rate=0.05,
                                  epoch_samples=None, rank=rank, world_size=world_size)

    def __iter__(self):
        for batch in self.loader:
            yield {**batch, "label": self._labels(batch)}

    def __len__(self) -> int:
        return len(self.loader) if hasattr(self.loader, "__len__") else 0

    def _labels(self, batch: dict) -> torch.Tensor:
        if batch.get("label") is not None:
            return torch.as_tensor(batch["label"]).long()
        metas = batch.get("meta") or []
        labels = [m.get(self.label_key) for m in metas]
        if not labels or any(v is None for v in labels):
            raise ValueError(f"{self.source}: samples carry no '{self.label_key}' (looked in "
                             "batch['label'] and each sample's meta); shard labelled data with "
                             "the label in the sample JSON")
        return torch.as_tensor(np.asarray(labels)).long()
