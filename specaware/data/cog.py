"""Cloud-Optimized GeoTIFF output written window by window (GDAL's COG driver; layout in the
OGC COG standard 21-026: tiles, internal overviews, the IFDs and tile index at the front).

The COG driver writes only by copying a finished dataset, so a `CogWriter` first writes a tiled,
compressed GeoTIFF beside the target (`.NAME.partial.tif`), a window at a time, and on close
copies it to the COG layout: GDAL computes the overviews (mode for class maps, average for
probabilities) and writes tiles from its bounded block cache, so memory never holds the scene.
The partial file is then removed; a crash leaves it, never a half-written target.

Float16 bands (class probabilities) are stored as IEEE half floats with NBITS=16 on Float32
bands, which every GDAL reads back as Float32 (GDAL's own Float16 type is recent, 3.11).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

log = logging.getLogger(__name__)


def _block(height: int, width: int) -> int:
    """512-pixel tiles (GDAL's COG default), 256 for small rasters, never above 512."""
    return 512 if min(height, width) >= 1024 else 256


class CogWriter:
    """Write [bands, h, w] windows, then publish `path` as a COG on `close()`.

    Args:
        path: the COG to write (folders are created).
        like: profile source: height, width, crs, transform (a rasterio dataset's profile).
        count: bands.
        dtype: numpy dtype name; "float16" is stored as half floats (NBITS=16 on Float32).
        nodata: nodata value written in the header (None: none).
        kind: "classes" (mode overviews) or "continuous" (average overviews).
        descriptions: one name per band (e.g. "p(class_3)").
        tags: dataset metadata (GDAL tags) carried into the COG.
    """

    def __init__(self, path, like: dict, count: int, dtype: str, nodata=None,
                 kind: str = "classes", descriptions: list[str] | None = None,
                 tags: dict | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(f".{self.path.stem}.partial.tif")
        self.half = dtype == "float16"
        self.kind, self.dtype = kind, "float32" if self.half else dtype
        h, w = like["height"], like["width"]
        b = _block(h, w)
        profile = {"driver": "GTiff", "height": h, "width": w, "count": count,
                   "dtype": self.dtype, "crs": like.get("crs"), "transform": like.get("transform"),
                   "nodata": nodata, "tiled": True, "blockxsize": b, "blockysize": b,
                   "compress": "deflate", "BIGTIFF": "IF_SAFER"}
        if self.half:
            profile["NBITS"] = 16
        self.block = b
        self.dst = rasterio.open(self.partial, "w", **profile)
        for i, text in enumerate(descriptions or []):
            self.dst.set_band_description(i + 1, text)
        if tags:
            self.dst.update_tags(**tags)

    def write(self, data: np.ndarray, row: int, col: int) -> None:
        """data [bands, h, w] at (row, col)."""
        self.dst.write(data.astype(self.dtype, copy=False),
                       window=Window(col, row, data.shape[-1], data.shape[-2]))

    def close(self) -> Path:
        self.dst.close()
        options = {"driver": "COG", "compress": "DEFLATE", "blocksize": self.block,
                   "overview_resampling": "MODE" if self.kind == "classes" else "AVERAGE",
                   "BIGTIFF": "IF_SAFER"}
        if self.half:
            options["NBITS"] = 16
        if self.kind == "continuous":
            options["predictor"] = "YES"      # floating-point predictor: smaller probabilities
        rasterio.shutil.copy(str(self.partial), str(self.path), **options)
        os.remove(self.partial)
        return self.path

    def abort(self) -> None:
        self.dst.close()
        self.partial.unlink(missing_ok=True)

    def __enter__(self) -> "CogWriter":
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()
