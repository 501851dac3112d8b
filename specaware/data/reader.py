"""Samples from windows of a raster: the fine-tuning and prediction side of the one reader.

`RasterReader.open(path, ...)` resolves the scene exactly as sharding does (`raster.open_scene`:
the same band table, sensor, level, GSD, nodata and scale/offset; docs/DESIGN.md section 1,
"Reading rasters") and fits (or replays) the normalisation of the scene (`normalize.fit_scene`);
`read(row, col, h, w)` returns a sample of the data contract for that window:

    image float32 [C, h, w] normalised, 0 where invalid; valid bool [C, h, w]
    wavelength, fwhm float32 [C] nm; gsd float (m); sensor, level str; meta {"scene", "window"}

A pixel is invalid when it is the band's nodata value or not finite.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from specaware.data.band_metadata import BandKeys
from specaware.data.normalize import apply_scene, fit_scene
from specaware.data.raster import RasterScene, open_scene, read_window
from specaware.data.remote import open_raster

DECIMATED = 256  # pixels per side of the read that normalisation statistics are fitted on


def _valid(data: np.ndarray, nodata: np.ndarray) -> np.ndarray:
    return ~nodata & np.isfinite(data)


def read_decimated(scene: RasterScene, side: int = DECIMATED) -> np.ndarray:
    """The whole scene at most ~`side` pixels a side, float32 [C, h, w] physical units, NaN
    where invalid (nearest-neighbour decimation by GDAL)."""
    step = max(1, max(scene.height, scene.width) // side)
    shape = (scene.num_bands, max(1, scene.height // step), max(1, scene.width // step))
    with open_raster(scene.path) as src:
        raw = src.read(scene.bands, out_shape=shape, out_dtype=np.float32)
    nodata = np.zeros(raw.shape, bool)
    for i, value in enumerate(scene.nodata):
        if value is not None:
            nodata[i] = np.isnan(raw[i]) if np.isnan(value) else raw[i] == np.float32(value)
    raw = raw * scene.scales.astype(np.float32)[:, None, None] \
        + scene.offsets.astype(np.float32)[:, None, None]
    return np.where(_valid(raw, nodata), raw, np.float32(np.nan))


@dataclass
class RasterReader:
    """One raster's scene metadata and normalisation; `read` gives samples of its windows."""

    scene: RasterScene
    normalization: dict

    @classmethod
    def open(cls, path, sensor: str = "", wavelength_file: str = "", normalize: str = "auto",
             normalization: dict | None = None, keys: BandKeys = BandKeys()) -> "RasterReader":
        """normalize: mode to fit (normalize.fit_scene) unless `normalization` (statistics
        from a checkpoint) is given; keys: the command's sensor / wavelength-file options."""
        scene = open_scene(path, sensor=sensor or None, wavelength_file=wavelength_file or None,
                           keys=keys, default_gsd=1.0)
        if normalization is None:
            normalization = fit_scene(read_decimated(scene), normalize, str(path))
        return cls(scene, normalization)

    @property
    def path(self) -> str:
        return str(self.scene.path)

    @property
    def shape(self) -> tuple[int, int]:
        return self.scene.height, self.scene.width

    @property
    def wavelength(self) -> np.ndarray:
        return self.scene.wavelength

    @property
    def fwhm(self) -> np.ndarray:
        return self.scene.fwhm

    @property
    def sensor(self) -> str:
        return self.scene.sensor

    @property
    def gsd(self) -> float:
        return self.scene.gsd

    def _read(self, row: int, col: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        with open_raster(self.scene.path) as src:
            data, nodata = read_window(src, self.scene, Window(col, row, w, h))
        return data, _valid(data, nodata)

    def read(self, row: int, col: int, h: int, w: int) -> dict:
        """The sample of the h x w window at (row, col) (see the module docstring)."""
        data, valid = self._read(row, col, h, w)
        image = apply_scene(np.where(valid, data, np.float32(0)), self.normalization)
        return {"image": np.where(valid, image, np.float32(0)).astype(np.float32),
                "valid": valid, "wavelength": self.scene.wavelength, "fwhm": self.scene.fwhm,
                "gsd": float(self.scene.gsd), "sensor": self.scene.sensor,
                "level": self.scene.level,
                "meta": {"scene": self.scene.name, "window": (row, col)}}
