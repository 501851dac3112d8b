"""From raster tiles to encoded shard samples: invalid marking, absorption bands, filtering,
georeferencing and descriptors (docs/DESIGN.md section 1 "Shards").

A value is invalid when it is the band's nodata value, non-finite, below `min_value`
(negative reflectance/radiance), or above the sensor's cap for the level (solar-reflective
bands only; thermal bands are in kelvin). Absorption bands are zeroed and flagged in
`band_valid`. A tile is dropped when the invalid fraction of its signal bands (valid bands x
pixels) exceeds `max_invalid`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import rasterio
from rasterio.warp import transform as warp_points
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from specaware.data.codec import DTYPES, encode_sample, make_key
from specaware.data.descriptors import tile_descriptors
from specaware.data.raster import RasterScene, Tile, iter_strip
from specaware.data.remote import open_raster
from specaware.data.sample import make_sample
from specaware.sensors import DEFAULT_ABSORPTION_RANGES, DEFAULT_VALUE_CAPS, absorption_mask

REFLECTIVE_LIMIT_NM = 3000.0  # caps apply below this; beyond is thermal emission


@dataclass(frozen=True)
class TilingOptions:
    """tile/stride in pixels; max_invalid a fraction; dtype of the stored cube; min_value and
    cap in physical units (cap None = the sensor's cap for the level)."""

    tile: int = 128
    stride: int | None = None
    max_invalid: float = 0.2
    dtype: str = "float16"
    min_value: float = 0.0
    cap: float | None = None

    def __post_init__(self):
        if self.tile < 1 or (self.stride is not None and self.stride < 1):
            raise ValueError(f"tile ({self.tile}) and stride ({self.stride}) must be >= 1")
        if not 0.0 <= self.max_invalid <= 1.0:
            raise ValueError(f"max_invalid must be within [0, 1], got {self.max_invalid}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")


@dataclass
class SceneJob:
    """Everything a worker needs to turn one strip of a scene into samples (picklable)."""

    scene: RasterScene
    scene_id: str
    options: TilingOptions
    descriptors: dict[str, Any] = field(default_factory=dict)

    @property
    def band_valid(self) -> np.ndarray:
        ranges = (self.scene.catalogue.absorption_ranges if self.scene.catalogue
                  else DEFAULT_ABSORPTION_RANGES)
        return ~absorption_mask(self.scene.wavelength, ranges)

    @property
    def cap(self) -> float | None:
        if self.options.cap is not None:
            return self.options.cap
        caps = self.scene.catalogue.value_caps if self.scene.catalogue else DEFAULT_VALUE_CAPS
        return caps.get(self.scene.level)


@dataclass
class TileResult:
    """A kept tile (key, members, manifest row) or a dropped one (key None)."""

    key: str | None
    members: dict[str, bytes] | None
    row: dict[str, Any]


def valid_mask(tile: Tile, wavelength: np.ndarray, cap: float | None,
               min_value: float) -> np.ndarray:
    """bool [C, t, t]: True where the value is usable (see the module docstring)."""
    data = tile.data
    valid = ~tile.nodata & np.isfinite(data) & (data >= min_value)
    if cap is not None:
        reflective = (wavelength < REFLECTIVE_LIMIT_NM)[:, None, None]
        valid &= ~reflective | (data <= cap)
    return valid


def invalid_fraction(valid: np.ndarray, band_valid: np.ndarray) -> float:
    """Fraction of invalid values over the signal bands (absorption bands do not count)."""
    signal = valid[band_valid]
    return 1.0 if signal.size == 0 else float(1.0 - signal.mean())


# A scene's per-window geolocation without a CRS: Window -> (bounds [W, S, E, N] in degrees or
# None, centre latitude or None); EMIT / PRISMA swaths have one (h5_cubes.CubeDataset.footprint)
Footprint = Callable[[Window], tuple]


def tile_geography(tile: Tile, crs: str | None, size: int, footprint: Footprint | None = None):
    """(bounds [W, S, E, N] in EPSG:4326 or None, centre latitude or None): from the CRS and
    transform, or for a tile without a CRS from the scene's `footprint` of its window (swath
    tiles: the min / max of its pixels' latitude / longitude; the tile keeps no CRS)."""
    if crs is None:
        return footprint(Window(tile.col, tile.row, size, size)) if footprint else (None, None)
    t = tile.transform
    x0, y0 = t @ (0, 0)
    x1, y1 = t @ (size, size)
    cx, cy = t @ (size / 2, size / 2)
    try:
        bounds = transform_bounds(crs, "EPSG:4326", min(x0, x1), min(y0, y1),
                                  max(x0, x1), max(y0, y1))
        _, lat = warp_points(crs, "EPSG:4326", [cx], [cy])
    except (rasterio.errors.CRSError, rasterio.errors.RasterioError, ValueError):
        return None, None
    return [round(float(v), 7) for v in bounds], float(lat[0])


def encode_tile(job: SceneJob, tile: Tile, footprint: Footprint | None = None) -> TileResult:
    """Mark, filter, describe and encode one tile (footprint: see tile_geography)."""
    scene, opts, band_valid = job.scene, job.options, job.band_valid
    key = make_key(job.scene_id, tile.row, tile.col)
    valid = valid_mask(tile, scene.wavelength, job.cap, opts.min_value)
    fraction = invalid_fraction(valid, band_valid)
    row = {"scene": job.scene_id, "row": tile.row, "col": tile.col,
           "invalid_fraction": round(fraction, 5)}
    if fraction > opts.max_invalid:
        return TileResult(None, None, row)
    valid &= band_valid[:, None, None]
    bounds, lat = tile_geography(tile, scene.crs, opts.tile, footprint)
    descriptors = tile_descriptors(tile.data, valid, scene.wavelength, latitude=lat)
    descriptors.update(job.descriptors)  # the user's scene descriptors win over computed ones
    meta = {"key": key, "scene": job.scene_id, "crs": scene.crs,
            "transform": [float(v) for v in tile.transform[:6]], "descriptors": descriptors}
    sample = make_sample(tile.data, scene.wavelength, scene.fwhm, valid=valid, gsd=scene.gsd,
                         sensor=scene.sensor, level=scene.level, meta=meta)
    members = encode_sample(sample, dtype=opts.dtype, band_valid=band_valid)
    row.update({"key": key, "sensor": scene.sensor, "bands": scene.num_bands,
                "bounds": bounds, "descriptors": descriptors})
    return TileResult(key, members, row)


def process_strip(job: SceneJob, row: int, cols: list[int]) -> list[TileResult]:
    """All tiles of one strip of `job.scene` (runs in a worker process)."""
    with open_raster(job.scene.path) as src:
        footprint = getattr(src, "footprint", None)  # swath products (h5_cubes.py)
        return [encode_tile(job, tile, footprint)
                for tile in iter_strip(src, job.scene, row, job.options.tile, cols)]
