"""Opening sensor scenes with rasterio: metadata, georeferencing, and pixels window by window.

Any GDAL raster works (GeoTIFF/COG, ENVI .img/.bsq + .hdr, NetCDF/HDF subdatasets...).
`open_scene` resolves everything but the pixels: band table (data/band_metadata.py, all in
nm), sensor, level, GSD, nodata, scale/offset (docs/DESIGN.md section 1, "Reading rasters"). `read_window`
reads any window in physical units with its nodata mask; sharding (`iter_tiles`, one strip of
tiles at a time, so memory follows bands x tile x width, not the scene size) and fine-tuning
(data/reader.py) both read through it.
"""
from __future__ import annotations

import logging
import math
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import rasterio
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from specaware.data.band_metadata import (TAG_PREFIX, BandKeys, RasterMetadataError,  # noqa: F401
                                          band_table, resolve_sensor)
from specaware.data.remote import display_url, is_remote, open_raster
from specaware.sensors import Sensor

log = logging.getLogger(__name__)

# Strips larger than this are read tile by tile instead (very wide scenes with many bands).
MAX_STRIP_BYTES = 256 * 2**20
CUBE_SUFFIXES = (".nc", ".nc4", ".h5", ".he5", ".hdf5")  # may hold an EMIT / PRISMA cube


def may_hold_cube(path) -> bool:
    """True when `path` (a file, URL or GDAL path) names a NetCDF / HDF5 file, which may hold an
    EMIT / PRISMA cube; a URL's query and fragment (a signer's ?sig=...) are not its name."""
    text = str(path)
    if "://" in text:
        text = urllib.parse.urlsplit(text).path
    return text.lower().endswith(CUBE_SUFFIXES)


@dataclass
class RasterScene:
    """Band metadata and georeferencing of one scene (no pixels).

    path: a local Path, or the URL / GDAL virtual path of a remote scene (a str: Path would
    fold the '//' of a URL); bands: 1-based band indexes; wavelength/fwhm float32 [C] nm;
    scales/offsets float64 [C]: physical value = raw * scale + offset; nodata per band.
    """

    path: Path | str
    width: int
    height: int
    bands: list[int]
    wavelength: np.ndarray
    fwhm: np.ndarray
    band_names: list[str]
    wavelength_source: str
    sensor: str
    level: str
    gsd: float
    crs: str | None
    transform: rasterio.Affine
    nodata: list[float | None]
    scales: np.ndarray
    offsets: np.ndarray
    tags: dict[str, str] = field(default_factory=dict)
    catalogue: Sensor | None = None

    @property
    def num_bands(self) -> int:
        return len(self.bands)

    @property
    def name(self) -> str:
        """The file's stem (without an EMIT:/PRISMA: reader prefix): tile keys start with it."""
        from specaware.data.h5_cubes import cube_path
        return Path(cube_path(str(self.path))).stem


def _gsd_from_transform(src) -> float | None:
    t, crs = src.transform, src.crs
    if crs is None or t.is_identity:
        return None
    if crs.is_geographic:
        lat = (t @ (src.width / 2, src.height / 2))[1]
        metres = 111_320.0 * math.cos(math.radians(lat)) * abs(t.a), 110_574.0 * abs(t.e)
        return float(np.mean(metres))
    factor = crs.linear_units_factor[1] if crs.is_projected else 1.0
    return float((abs(t.a) + abs(t.e)) / 2 * factor)


def _resolve_level(level: str | None, tags: dict[str, str]) -> str:
    """Explicit level, else SPECAWARE_LEVEL, else a plain `level` tag of L1/L2, else L2."""
    hint = tags.get(TAG_PREFIX + "LEVEL") or tags.get("level", "").upper()
    return level or (hint if hint in ("L1", "L2") else "L2")


def _resolve_gsd(src, gsd: float | None, cat: Sensor | None, default_gsd: float | None,
                 where: str, keys: BandKeys) -> float:
    """Explicit GSD, else from the georeferencing, else the sensor's, else `default_gsd`."""
    resolution = gsd or _gsd_from_transform(src) or (cat.gsd if cat else None)
    if resolution is None and default_gsd is not None:
        log.info("%s: no georeferencing and no sensor; GSD taken as %g m", where, default_gsd)
        resolution = default_gsd
    if resolution is None:
        raise RasterMetadataError(f"{where}: no georeferencing and no sensor to take a GSD "
                                  f"from. Fix: pass --gsd METRES or "
                                  f"{keys.how(keys.sensor, 'NAME')}")
    return float(resolution)


def open_scene(path, *, sensor: str | None = None, level: str | None = None,
               gsd: float | None = None, scale: float | None = None,
               offset: float | None = None, wavelength_file: str | None = None,
               keys: BandKeys = BandKeys(), default_gsd: float | None = None) -> RasterScene:
    """Resolve the band metadata of the scene at `path` (reads headers only, no pixels).

    sensor: catalogue name used when the file has no wavelengths (and for value caps and
    absorption ranges; default: a SPECAWARE_SENSOR tag, or a `sensor` tag naming a catalogue
    sensor); level: "L1"/"L2" (default: SPECAWARE_LEVEL or `level` tag, else "L2");
    gsd: metres (default from the transform, else the sensor, else `default_gsd`);
    scale/offset override the file's own (physical = raw * scale + offset);
    wavelength_file: band centres that win over the file's (band_metadata.read_wavelength_file);
    keys: the running command's flags / config keys, named in error messages.
    """
    path = str(path) if is_remote(path) else Path(path)
    if may_hold_cube(path):
        from specaware.data.h5_cubes import cube_name
        path = cube_name(path) or path  # EMIT / PRISMA products (data/h5_cubes.py)
    where = display_url(path)
    with open_raster(path) as src:
        cat = resolve_sensor(src, sensor)
        table = band_table(src, where, cat, wavelength_file, keys)
        bands = list(range(1, src.count + 1))
        tags = {k: v for k, v in src.tags().items() if k.upper().startswith(TAG_PREFIX)}
        nodata = [src.nodatavals[b - 1] for b in bands]
        scales = np.full(len(bands), scale) if scale is not None else np.asarray(src.scales)
        offsets = np.full(len(bands), offset) if offset is not None else np.asarray(src.offsets)
        return RasterScene(
            path=path, width=src.width, height=src.height, bands=bands,
            wavelength=table.wavelength.astype(np.float32), fwhm=table.fwhm.astype(np.float32),
            band_names=list(table.names), wavelength_source=table.source,
            sensor=cat.name if cat else "unknown", level=_resolve_level(level, src.tags()),
            gsd=_resolve_gsd(src, gsd, cat, default_gsd, where, keys),
            crs=src.crs.to_string() if src.crs else None, transform=src.transform,
            nodata=nodata, scales=scales.astype(np.float64),
            offsets=offsets.astype(np.float64), tags=tags, catalogue=cat)


def tile_origins(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets covering [0, length) with `tile`-sized steps of `stride`; the last tile is
    snapped to the edge so the whole extent is covered. Empty when length < tile."""
    if length < tile:
        return []
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


@dataclass
class Tile:
    """One tile: data float32 [C, t, t] (physical units), nodata bool [C, t, t]."""

    row: int
    col: int
    data: np.ndarray
    nodata: np.ndarray
    transform: rasterio.Affine


def read_window(src, scene: RasterScene, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """(data float32 [C, h, w] scaled to physical units, nodata bool [C, h, w])."""
    raw = src.read(scene.bands, window=window, out_dtype=np.float32)
    nodata = np.zeros(raw.shape, dtype=bool)
    for i, value in enumerate(scene.nodata):
        if value is not None:
            nodata[i] = np.isnan(raw[i]) if np.isnan(value) else raw[i] == np.float32(value)
    raw *= scene.scales.astype(np.float32)[:, None, None]
    raw += scene.offsets.astype(np.float32)[:, None, None]
    return raw, nodata


def iter_strip(src, scene: RasterScene, row: int, tile: int, cols: list[int]) -> Iterator[Tile]:
    """Tiles whose top edge is `row`: one strip read (or one read per tile if too wide)."""
    if not cols:
        return
    span = cols[-1] + tile - cols[0]
    if scene.num_bands * tile * span * 4 <= MAX_STRIP_BYTES:
        data, nodata = read_window(src, scene, Window(cols[0], row, span, tile))
        for col in cols:
            x = col - cols[0]
            yield Tile(row, col, data[:, :, x:x + tile], nodata[:, :, x:x + tile],
                       window_transform(Window(col, row, tile, tile), scene.transform))
        return
    for col in cols:
        window = Window(col, row, tile, tile)
        data, nodata = read_window(src, scene, window)
        yield Tile(row, col, data, nodata, window_transform(window, scene.transform))


def iter_tiles(scene: RasterScene, tile: int, stride: int | None = None) -> Iterator[Tile]:
    """All tiles of `scene`, row-major, reading one strip at a time."""
    stride = stride or tile
    cols = tile_origins(scene.width, tile, stride)
    with open_raster(scene.path) as src:
        for row in tile_origins(scene.height, tile, stride):
            yield from iter_strip(src, scene, row, tile, cols)
