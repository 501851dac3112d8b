"""Reading sensor scenes with rasterio: band metadata, and tiles window by window.

Any GDAL raster works (GeoTIFF/COG, ENVI .img/.bsq + .hdr, NetCDF/HDF subdatasets...).
Wavelengths come from the file first, in this order (DESIGN.md section 1):
  1. ENVI metadata domain `wavelength` / `fwhm` / `wavelength units` (full precision lists);
  2. per-band tags `wavelength` / `fwhm` (units from a `wavelength_units` tag);
  3. GDAL IMAGERY domain `CENTRAL_WAVELENGTH_UM` / `FWHM_UM` (micrometres, GDAL >= 3.10);
  4. the catalogue entry of the named sensor (`--sensor`, a `SPECAWARE_SENSOR` tag, or a plain
     `sensor` tag that names a catalogue sensor).
Everything is converted to nm. Scenes are never read whole: `iter_tiles` reads one strip of
tiles at a time, so memory follows bands x tile x width, not the scene size.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import rasterio
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from specaware.data.remote import display_url, is_remote, open_raster
from specaware.data.sample import WAVELENGTH_RANGE_NM
from specaware.sensors import Sensor, UnknownSensorError, get_sensor

log = logging.getLogger(__name__)

TAG_PREFIX = "SPECAWARE_"
MICROMETRE_UNITS = {"micrometers", "micrometer", "micrometres", "micrometre", "microns",
                    "micron", "um", "µm", "mum"}
NANOMETRE_UNITS = {"nanometers", "nanometer", "nanometres", "nanometre", "nm"}
# Strips larger than this are read tile by tile instead (very wide scenes with many bands).
MAX_STRIP_BYTES = 256 * 2**20


class RasterMetadataError(ValueError):
    """A scene whose band metadata cannot be resolved; the message names the file and the fix."""


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
        return Path(str(self.path)).stem


def parse_list(text: str) -> list[float]:
    """ENVI list text "{ 0.45, 0.55 }" (or plain "0.45,0.55") -> floats."""
    return [float(x) for x in re.split(r"[,\s]+", text.strip().strip("{}").strip()) if x]


def unit_factor(units: str | None, values, where: str) -> float:
    """Multiplier that brings `values` to nm, from a units string or, if absent, magnitude."""
    key = (units or "").strip().lower()
    if key in MICROMETRE_UNITS:
        return 1000.0
    if key in NANOMETRE_UNITS:
        return 1.0
    if key and key not in {"unknown", "index", "none", ""}:
        raise RasterMetadataError(f"{where}: wavelength units '{units}' are not supported; "
                                  f"use Nanometers or Micrometers")
    peak = float(np.nanmax(values)) if len(values) else 0.0
    factor = 1000.0 if peak < 30.0 else 1.0  # nothing we read is below 30 nm or above 30 um
    log.info("%s: wavelength units not given; values up to %g read as %s", where, peak,
             "micrometres" if factor == 1000.0 else "nanometres")
    return factor


def _from_envi_domain(src, where: str):
    envi = {k.lower(): v for k, v in src.tags(ns="ENVI").items()}
    if "wavelength" not in envi:
        return None
    wl = np.asarray(parse_list(envi["wavelength"]), dtype=np.float64)
    fwhm = np.asarray(parse_list(envi["fwhm"]), dtype=np.float64) if "fwhm" in envi else None
    factor = unit_factor(envi.get("wavelength_units"), wl, where)
    if fwhm is not None and fwhm.shape != wl.shape:
        raise RasterMetadataError(f"{where}: ENVI header lists {wl.size} wavelengths but "
                                  f"{fwhm.size} fwhm values; fix the header")
    return wl * factor, None if fwhm is None else fwhm * factor, "envi header"


def _band_tag(tags: dict[str, str], *names: str) -> str | None:
    lowered = {k.lower(): v for k, v in tags.items()}
    return next((lowered[n] for n in names if n in lowered), None)


def _from_band_tags(src, where: str):
    wl, fwhm, units = [], [], _band_tag(src.tags(), "wavelength_units")
    for b in range(1, src.count + 1):
        tags = src.tags(b)
        value = _band_tag(tags, "wavelength", "wavelength_nm", "central_wavelength")
        if value is None:
            if wl:
                raise RasterMetadataError(f"{where}: band {b} has no 'wavelength' tag while "
                                          f"earlier bands do; tag every band or none")
            return None
        units = _band_tag(tags, "wavelength_units") or units
        wl.append(float(value))
        width = _band_tag(tags, "fwhm", "fwhm_nm", "bandwidth")
        fwhm.append(np.nan if width is None else float(width))
    wl_arr = np.asarray(wl)
    factor = unit_factor(units, wl_arr, where)
    fwhm_arr = np.asarray(fwhm) * factor
    return wl_arr * factor, None if np.isnan(fwhm_arr).any() else fwhm_arr, "band tags"


def _from_imagery_domain(src, where: str):
    wl, fwhm = [], []
    for b in range(1, src.count + 1):
        tags = src.tags(b, ns="IMAGERY")
        if "CENTRAL_WAVELENGTH_UM" not in tags:
            return None
        wl.append(float(tags["CENTRAL_WAVELENGTH_UM"]) * 1000.0)
        fwhm.append(float(tags.get("FWHM_UM", "nan")) * 1000.0)
    fwhm_arr = np.asarray(fwhm)
    return np.asarray(wl), None if np.isnan(fwhm_arr).any() else fwhm_arr, "gdal imagery"


def file_wavelengths(src, where: str):
    """(wavelength nm, fwhm nm or None, source) from the file itself, or None."""
    for reader in (_from_envi_domain, _from_band_tags, _from_imagery_domain):
        found = reader(src, where)
        if found is not None:
            if len(found[0]) != src.count:
                raise RasterMetadataError(
                    f"{where}: {found[2]} list {len(found[0])} wavelengths but the file has "
                    f"{src.count} bands; fix the metadata so there is one wavelength per band")
            check_plausible_nm(found[0], f"{where}: {found[2]}")
            return found
    return None


def check_plausible_nm(wavelength, where: str) -> None:
    """RasterMetadataError unless every converted centre lies in WAVELENGTH_RANGE_NM: a value
    outside is a unit mistake that would otherwise reach pretraining (nm values tagged as
    micrometres become 442700-2202370 nm)."""
    wl = np.asarray(wavelength, dtype=np.float64)
    lo, hi = WAVELENGTH_RANGE_NM
    if wl.size and np.all(np.isfinite(wl)) and lo <= wl.min() and wl.max() <= hi:
        return
    got = f"{np.nanmin(wl):g}..{np.nanmax(wl):g} nm" if wl.size else "nothing"
    hint = ("nanometre values tagged as micrometres? " if np.nanmax(wl) > hi else
            "micrometre values tagged as nanometres? " if np.nanmax(wl) < lo else "")
    raise RasterMetadataError(
        f"{where}: wavelengths read as {got} after unit conversion, outside the plausible "
        f"{lo:g}-{hi:g} nm ({hint}or values that are not wavelengths). Fix the 'wavelength "
        f"units' (ENVI) / 'wavelength_units' tag to match the values, or pass --sensor NAME")


def _estimate_fwhm(wl: np.ndarray) -> np.ndarray:
    """FWHM from band spacing, for files that give centres only (spectrometers sample ~FWHM)."""
    if wl.size < 2:
        return np.full(wl.shape, 10.0)
    order = np.argsort(wl)
    gaps = np.abs(np.gradient(wl[order]))
    out = np.empty_like(wl)
    out[order] = np.maximum(gaps, 1.0)
    return out


def _match_band_names(src, sensor: Sensor) -> list[int] | None:
    """Catalogue band positions for the file's band descriptions (B02 == B2), or None."""
    def norm(name: str) -> str:
        return re.sub(r"^b0*", "b", name.strip().lower())
    wanted = [norm(d) for d in src.descriptions if d]
    if len(wanted) != src.count:
        return None
    table = {norm(n): i for i, n in enumerate(sensor.band_names)}
    if not all(w in table for w in wanted):
        return None
    return [table[w] for w in wanted]


def _sensor_wavelengths(src, sensor: Sensor, where: str):
    if src.count == sensor.num_bands:
        idx = list(range(sensor.num_bands))
    else:
        idx = _match_band_names(src, sensor)
        if idx is None:
            raise RasterMetadataError(
                f"{where}: the file has {src.count} bands but sensor '{sensor.name}' has "
                f"{sensor.num_bands} and the band descriptions {list(src.descriptions)[:4]}... "
                f"do not name its bands ({', '.join(sensor.band_names[:4])}...). Fix: put "
                f"wavelengths in the file (ENVI 'wavelength' or per-band tags), or set band "
                f"descriptions to the sensor's band names")
    return (sensor.wavelength[idx].astype(np.float64), sensor.fwhm[idx].astype(np.float64),
            f"sensor catalogue ({sensor.name})", [sensor.band_names[i] for i in idx])


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


def _resolve_sensor(src, sensor: str | None) -> Sensor | None:
    """The explicit sensor or SPECAWARE_SENSOR tag (must be known), else a plain `sensor` tag
    or ENVI `sensor type` when it names a catalogue sensor (free text is ignored)."""
    name = sensor or src.tags().get(TAG_PREFIX + "SENSOR")
    if name:
        return get_sensor(name)
    hint = src.tags().get("sensor") or src.tags(ns="ENVI").get("sensor_type")
    try:
        return get_sensor(hint) if hint else None
    except UnknownSensorError:
        log.info("%s: sensor tag %r is not in the catalogue; ignored", src.name, hint)
        return None


def _resolve_wavelengths(src, cat: Sensor | None, where: str):
    """(wavelength nm, fwhm nm, source, band names): the file's own, else the sensor's."""
    found = file_wavelengths(src, where)
    names = [d or f"band{i + 1}" for i, d in enumerate(src.descriptions)]
    if found is None and cat is not None:
        return _sensor_wavelengths(src, cat, where)
    if found is None:
        raise RasterMetadataError(
            f"{where}: no wavelengths found (no ENVI 'wavelength', no per-band "
            f"'wavelength' tags, no CENTRAL_WAVELENGTH_UM) and no sensor given. Fix: pass "
            f"--sensor NAME (see `specaware sensors`) or add wavelengths to the header")
    wl, fwhm, source = found
    if fwhm is None and cat is not None and cat.num_bands == src.count:
        fwhm = cat.fwhm.astype(np.float64)
    elif fwhm is None:
        log.warning("%s: no FWHM in the file; estimated from the band spacing", where)
        fwhm = _estimate_fwhm(wl)
    return wl, fwhm, source, names


def _resolve_level(level: str | None, tags: dict[str, str]) -> str:
    """Explicit level, else SPECAWARE_LEVEL, else a plain `level` tag of L1/L2, else L2."""
    hint = tags.get(TAG_PREFIX + "LEVEL") or tags.get("level", "").upper()
    return level or (hint if hint in ("L1", "L2") else "L2")


def open_scene(path, *, sensor: str | None = None, level: str | None = None,
               gsd: float | None = None, scale: float | None = None,
               offset: float | None = None) -> RasterScene:
    """Resolve the band metadata of the scene at `path` (reads headers only, no pixels).

    sensor: catalogue name used when the file has no wavelengths (and for value caps and
    absorption ranges; default: a SPECAWARE_SENSOR tag, or a `sensor` tag naming a catalogue
    sensor); level: "L1"/"L2" (default: SPECAWARE_LEVEL or `level` tag, else "L2");
    gsd: metres (default from the transform, else the sensor); scale/offset override the
    file's own scale/offset (physical = raw * scale + offset).
    """
    path = str(path) if is_remote(path) else Path(path)
    where = display_url(path)
    with open_raster(path) as src:
        cat = _resolve_sensor(src, sensor)
        wl, fwhm, source, names = _resolve_wavelengths(src, cat, where)
        bands = list(range(1, src.count + 1))
        tags = {k: v for k, v in src.tags().items() if k.upper().startswith(TAG_PREFIX)}
        resolution = gsd or _gsd_from_transform(src) or (cat.gsd if cat else None)
        if resolution is None:
            raise RasterMetadataError(f"{where}: no georeferencing and no sensor to take a GSD "
                                      f"from. Fix: pass --gsd METRES or --sensor NAME")
        nodata = [src.nodatavals[b - 1] for b in bands]
        scales = np.full(len(bands), scale) if scale is not None else np.asarray(src.scales)
        offsets = np.full(len(bands), offset) if offset is not None else np.asarray(src.offsets)
        return RasterScene(
            path=path, width=src.width, height=src.height, bands=bands,
            wavelength=np.asarray(wl, dtype=np.float32), fwhm=np.asarray(fwhm, np.float32),
            band_names=list(names), wavelength_source=source,
            sensor=cat.name if cat else "unknown",
            level=_resolve_level(level, src.tags()), gsd=float(resolution),
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
