"""GeoTIFF (any GDAL raster) image + mask pairs for segmentation, and (t1, t2, change mask)
triples for change detection, read window by window with rasterio so scenes never load whole.

Band centres come from the file first (ENVI `wavelength`/`fwhm` metadata, per-band
`wavelength`/`CENTRAL_WAVELENGTH_UM`/`FWHM_UM` tags), else from a named sensor of the catalogue,
else from a wavelength file given by the user; none of these -> an error saying which to add.
Masks: `zero_is_unlabelled` (0 = unlabelled, 1..K = classes) or 0..K-1 as is; `ignore_value`
(and the mask's nodata) = unlabelled. Change masks: 0 = no change, 1..K-1 = change.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window
from torch.utils.data import Dataset

from specaware.data.remote import open_raster
from specaware.finetune.datasets import wavelengths as wltab
from specaware.finetune.datasets.protocol import tile_windows
from specaware.finetune.datasets.scene import (IGNORE, HSIScene, LabelledScene, apply_normalization,
                                               fit_normalization)

_NUMBER = re.compile(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?")
_DECIMATED = 256  # pixels per side of the read used to fit normalisation statistics


def _numbers(text: str) -> list[float]:
    return [float(v) for v in _NUMBER.findall(text or "")]


def _from_file(ds) -> tuple[np.ndarray | None, np.ndarray | None]:
    envi = {k.lower(): v for k, v in ds.tags(ns="ENVI").items()}
    if "wavelength" in envi:
        wl, fw = _numbers(envi["wavelength"]), _numbers(envi.get("fwhm", ""))
        micro = "micro" in envi.get("wavelength_units", "").lower()
        f = 1000.0 if micro else wltab.unit_factor(wl)
        return np.float32(wl) * f, (np.float32(fw) * f if len(fw) == len(wl) else None)
    wl, fw = [], []
    for i in range(1, ds.count + 1):
        tags = {k.lower(): v for k, v in ds.tags(i).items()}
        if "central_wavelength_um" in tags:
            wl.append(float(tags["central_wavelength_um"]) * 1000)
            fw.append(float(tags.get("fwhm_um", "nan")) * 1000)
        elif "wavelength" in tags:
            wl.append(float(_numbers(tags["wavelength"])[0]))
            fw.append(float(_numbers(tags.get("fwhm", "nan"))[0]) if tags.get("fwhm") else np.nan)
    if len(wl) != ds.count:
        return None, None
    wl_nm, fw_nm = wltab.to_nm(wl, fw)
    return wl_nm, (None if np.isnan(fw_nm).any() else fw_nm)


def band_metadata(ds, path, sensor: str = "", wavelength_file: str = ""):
    """(wavelength [C] nm, fwhm [C] nm, sensor name) of an open rasterio dataset."""
    if wavelength_file:
        wl, fw = wltab.read_table_file(wavelength_file)
    else:
        wl, fw = _from_file(ds)
    if wl is None and sensor:
        from specaware.sensors import get_sensor
        s = get_sensor(sensor)
        wl, fw, sensor = s.wavelength, s.fwhm, s.name
    if wl is None:
        raise ValueError(f"{path}: no band wavelengths in the file (ENVI 'wavelength' or per-band "
                         "'wavelength' tags). Fix: give the sensor (data.sensor=aviris-ng) or a "
                         "wavelength file (data.wavelength=bands.csv, nm)")
    if len(wl) != ds.count:
        raise ValueError(f"{path}: {ds.count} bands but {len(wl)} wavelengths (from "
                         f"{wavelength_file or sensor or 'file metadata'}); give one per band")
    from specaware.data.raster import check_plausible_nm
    check_plausible_nm(wl, f"{path}: {wavelength_file or sensor or 'file metadata'}")
    if fw is None:
        fw = np.full(len(wl), float(np.median(np.abs(np.diff(wl)))) if len(wl) > 1 else 10.0)
    return np.asarray(wl, np.float32), np.asarray(fw, np.float32), sensor or "unknown"


@dataclass
class RasterInfo:
    """What every window of one raster needs: path, band table, normalisation, grid."""
    path: str
    wavelength: np.ndarray
    fwhm: np.ndarray
    sensor: str
    gsd: float
    nodata: float | None
    normalization: dict
    shape: tuple[int, int]

    @classmethod
    def open(cls, path, sensor: str = "", wavelength_file: str = "", normalize: str = "auto",
             normalization: dict | None = None) -> "RasterInfo":
        with open_raster(path) as ds:
            wl, fw, name = band_metadata(ds, path, sensor, wavelength_file)
            if normalization is None:
                scale = max(1, max(ds.height, ds.width) // _DECIMATED)
                small = ds.read(out_shape=(ds.count, max(1, ds.height // scale),
                                           max(1, ds.width // scale)), masked=True)
                normalization = fit_normalization(small.filled(np.nan).astype(np.float32),
                                                  normalize, str(path))
            gsd = float(abs(ds.transform.a)) if ds.crs and not ds.crs.is_geographic else 1.0
            return cls(str(path), wl, fw, name, gsd, ds.nodata, normalization,
                       (ds.height, ds.width))

    def read(self, row: int, col: int, h: int, w: int) -> dict:
        """A sample dict for the window at (row, col) of size h x w."""
        with open_raster(self.path) as ds:
            data = ds.read(window=Window(col, row, w, h)).astype(np.float32)
        valid = np.isfinite(data)
        if self.nodata is not None:
            valid &= data != self.nodata
        image = np.where(valid, apply_normalization(np.nan_to_num(data), self.normalization), 0)
        scene = HSIScene(image, self.wavelength, self.fwhm, self.gsd, self.sensor,
                         name=Path(self.path).stem)
        return scene.sample(image.astype(np.float32), valid, window=(row, col))


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
        self.infos = [RasterInfo.open(p, sensor, wavelength, normalize) for p in images]
        self.infos2 = [RasterInfo.open(p, sensor2 or sensor, wavelength2 or wavelength, normalize)
                       for p in images2 or []]
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
    info = RasterInfo.open(image, sensor, wavelength, normalize)
    sample = info.read(0, 0, *info.shape)
    labels = read_mask(mask, zero_is_unlabelled=zero_is_unlabelled, ignore_value=ignore_value)
    k = num_classes or int(labels.max()) + 1
    scene = HSIScene(sample["image"], info.wavelength, info.fwhm, info.gsd, info.sensor,
                     name=Path(image).stem, meta={"normalization": info.normalization})
    return LabelledScene(scene, labels, [f"class_{i + 1}" for i in range(k)])
