"""GeoTIFF (any GDAL raster) image + mask pairs for segmentation, and (t1, t2, change mask)
triples for change detection, read window by window so scenes never load whole.

Images are read by `data/reader.RasterReader`, the reader sharding uses too: the same band
table (a wavelength file given by the user, else the file's own, else the named sensor's;
none of these -> one error line naming data.sensor / data.wavelength), nodata and scaling.
Masks: `zero_is_unlabelled` (0 = unlabelled, 1..K = classes) or 0..K-1 as is; `ignore_value`
(and the mask's nodata) = unlabelled. Change masks: 0 = no change, 1..K-1 = change.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from rasterio.windows import Window
from torch.utils.data import Dataset

from specaware.data.band_metadata import BandKeys
from specaware.data.reader import RasterReader
from specaware.data.remote import open_raster
from specaware.finetune.datasets.protocol import tile_windows
from specaware.finetune.datasets.scene import IGNORE, HSIScene, LabelledScene

# how `specaware finetune` takes a sensor / wavelength file, named in metadata errors
KEYS = BandKeys("data.sensor", "data.wavelength")
KEYS_T2 = BandKeys("data.sensor2", "data.wavelength2")


def read_mask(path, row=0, col=0, h=None, w=None, zero_is_unlabelled=True,
              ignore_value: int | None = 255) -> np.ndarray:
    """Labels int64 [h, w] in the internal convention (-1 = unlabelled)."""
    with open_raster(path) as ds:
        h, w = h or ds.height, w or ds.width
        raw = ds.read(1, window=Window(col, row, w, h)).astype(np.int64)
        nodata = ds.nodata
    unlabelled = np.zeros(raw.shape, bool)
    for v in (ignore_value, nodata):
        if v is not None:
            unlabelled |= raw == int(v)
    labels = raw - 1 if zero_is_unlabelled else raw
    unlabelled |= labels < 0
    return np.where(unlabelled, IGNORE, labels)


class GeoTiffTiles(Dataset):
    """Tiles of image + mask pairs (segmentation) or t1 + t2 + mask triples (change)."""

    def __init__(self, images: list[str], masks: list[str], tile: int, stride: int = 0,
                 images2: list[str] | None = None, sensor: str = "", sensor2: str = "",
                 wavelength: str = "", wavelength2: str = "", normalize: str = "auto",
                 zero_is_unlabelled: bool = True, ignore_value: int | None = 255):
        if len(images) != len(masks) or (images2 and len(images2) != len(images)):
            raise ValueError(f"{len(images)} images, {len(images2 or [])} second dates and "
                             f"{len(masks)} masks: give one mask (and t2) per image")
        self.tile, self.mask_args = tile, (zero_is_unlabelled, ignore_value)
        self.infos = [RasterReader.open(p, sensor, wavelength, normalize, keys=KEYS)
                      for p in images]
        self.infos2 = [RasterReader.open(p, sensor2 or sensor, wavelength2 or wavelength,
                                         normalize, keys=KEYS_T2) for p in images2 or []]
        self.masks = list(masks)
        self.items: list[tuple[int, int, int]] = []
        for i, info in enumerate(self.infos):
            self._check_grid(i)
            for r, c in tile_windows(info.shape, min(tile, *info.shape), stride or tile):
                if (self._labels(i, r, c) >= 0).any():
                    self.items.append((i, r, c))

    def _check_grid(self, i: int) -> None:
        grids = [self.infos[i]] + ([self.infos2[i]] if self.infos2 else [])
        with open_raster(self.masks[i]) as m:
            shapes = {g.path: g.shape for g in grids} | {self.masks[i]: (m.height, m.width)}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"rasters of pair {i} differ in size: {shapes}; resample them onto "
                             "one grid first")

    def _size(self, i: int) -> int:
        return min(self.tile, *self.infos[i].shape)

    def _labels(self, i: int, r: int, c: int) -> np.ndarray:
        s = self._size(i)
        return read_mask(self.masks[i], r, c, s, s, *self.mask_args)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> dict:
        i, r, c = self.items[k]
        s = self._size(i)
        label = self._labels(i, r, c)
        if self.infos2:
            return {"t1": self.infos[i].read(r, c, s, s), "t2": self.infos2[i].read(r, c, s, s),
                    "label": label}
        return {**self.infos[i].read(r, c, s, s), "label": label}


def read_labelled_scene(image: str, mask: str, sensor: str = "", wavelength: str = "",
                        normalize: str = "auto", zero_is_unlabelled: bool = True,
                        ignore_value: int | None = 255, num_classes: int = 0) -> LabelledScene:
    """A whole (benchmark-sized) GeoTIFF + mask in memory, for pixel-patch classification."""
    info = RasterReader.open(image, sensor, wavelength, normalize, keys=KEYS)
    sample = info.read(0, 0, *info.shape)
    labels = read_mask(mask, zero_is_unlabelled=zero_is_unlabelled, ignore_value=ignore_value)
    k = num_classes or int(labels.max()) + 1
    scene = HSIScene(sample["image"], info.wavelength, info.fwhm, info.gsd, info.sensor,
                     sample["level"], name=Path(image).stem,
                     meta={"normalization": info.normalization})
    return LabelledScene(scene, labels, [f"class_{i + 1}" for i in range(k)])
