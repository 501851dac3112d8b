"""Band metadata of a raster: centre wavelength and FWHM of every band, in nm.

The one reader of band tables, used by sharding (`data/raster.open_scene`) and by every
fine-tuning and prediction input (`data/reader.RasterReader`), so a file gets the same
wavelengths and FWHM in pretraining and fine-tuning (docs/DESIGN.md section 1, "Reading rasters").
Sources, first found wins:
  0. a wavelength file the user names (JSON {"wavelength": [...], "fwhm": [...]}, or one or
     two columns of text/CSV: centre[, fwhm]);
  1. ENVI metadata domain `wavelength` / `fwhm` / `wavelength units` (full precision lists);
  2. per-band tags `wavelength` / `fwhm` (units from a `wavelength_units` tag; a dataset tag
     `wavelength_source` names where a product reader took them from, e.g. "EMIT
     sensor_band_parameters", for the shard summary);
  3. GDAL IMAGERY domain `CENTRAL_WAVELENGTH_UM` / `FWHM_UM` (micrometres, GDAL >= 3.10), or
     the same names as plain per-band tags;
  4. the catalogue entry of the named sensor (`--sensor` / `data.sensor`, a `SPECAWARE_SENSOR`
     tag, or a plain `sensor` tag that names a catalogue sensor).
Without units, centres below 30 are micrometres. A file that gives centres but no FWHM takes
the catalogue sensor's FWHM when the band counts agree, else the local band spacing.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from specaware.data.sample import WAVELENGTH_RANGE_NM
from specaware.sensors import Sensor, UnknownSensorError, get_sensor
from specaware.units import MICROMETRE_LIMIT

log = logging.getLogger(__name__)

__all__ = ["BandKeys", "BandTable", "RasterMetadataError", "band_table", "check_plausible_nm",
           "estimate_fwhm", "read_wavelength_file", "resolve_sensor", "unit_factor", "TAG_PREFIX"]

TAG_PREFIX = "SPECAWARE_"
MICROMETRE_UNITS = {"micrometers", "micrometer", "micrometres", "micrometre", "microns",
                    "micron", "um", "µm", "mum"}
NANOMETRE_UNITS = {"nanometers", "nanometer", "nanometres", "nanometre", "nm"}
_NUMBER = re.compile(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?")


class RasterMetadataError(ValueError):
    """A scene whose band metadata cannot be resolved; the message names the file and the fix."""


@dataclass(frozen=True)
class BandKeys:
    """How the running command takes a sensor name and a wavelength file, for error messages:
    flags (`--sensor`) or config keys (`data.sensor`); wavelength None = the command has none."""

    sensor: str = "--sensor"
    wavelength: str | None = None

    def how(self, key: str, value: str) -> str:
        return f"{key} {value}" if key.startswith("-") else f"{key}={value}"


@dataclass
class BandTable:
    """wavelength/fwhm float64 [C] nm; source: where they came from; names: one per band."""

    wavelength: np.ndarray
    fwhm: np.ndarray
    source: str
    names: list[str]


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
    factor = 1000.0 if peak < MICROMETRE_LIMIT else 1.0  # specaware/units.py
    log.info("%s: wavelength units not given; values up to %g read as %s", where, peak,
             "micrometres" if factor == 1000.0 else "nanometres")
    return factor


def read_wavelength_file(path, where: str = "") -> tuple[np.ndarray, np.ndarray | None]:
    """(centres nm, fwhm nm or None) of a user's wavelength file (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise RasterMetadataError(f"{where or p}: wavelength file {p} not found")
    if p.suffix == ".json":
        d = json.loads(p.read_text())
        wl, fwhm = np.asarray(d["wavelength"], np.float64), d.get("fwhm")
        fwhm = None if fwhm is None else np.asarray(fwhm, np.float64)
    else:
        rows = np.loadtxt(p, delimiter="," if p.suffix == ".csv" else None, ndmin=2)
        wl, fwhm = rows[:, 0], (rows[:, 1] if rows.shape[1] > 1 else None)
    factor = unit_factor(None, wl, str(p))
    return wl * factor, None if fwhm is None else fwhm * factor


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


def _number(text: str, where: str, band: int, tag: str) -> float:
    found = _NUMBER.search(text or "")
    if found is None:
        raise RasterMetadataError(f"{where}: band {band} tag '{tag}' = {text!r} is not a number; "
                                  f"fix the tag (nm, e.g. 450.5)")
    return float(found.group())


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
        wl.append(_number(value, where, b, "wavelength"))
        width = _band_tag(tags, "fwhm", "fwhm_nm", "bandwidth")
        fwhm.append(np.nan if width is None else _number(width, where, b, "fwhm"))
    wl_arr = np.asarray(wl)
    factor = unit_factor(units, wl_arr, where)
    fwhm_arr = np.asarray(fwhm) * factor
    source = _band_tag(src.tags(), "wavelength_source") or "band tags"
    return wl_arr * factor, None if np.isnan(fwhm_arr).any() else fwhm_arr, source


def _from_imagery_names(src, where: str, ns: str | None):
    """CENTRAL_WAVELENGTH_UM / FWHM_UM per band, in the IMAGERY domain (ns) or the default."""
    wl, fwhm = [], []
    for b in range(1, src.count + 1):
        tags = src.tags(b, ns=ns) if ns else src.tags(b)
        centre = _band_tag(tags, "central_wavelength_um")
        if centre is None:
            return None
        wl.append(_number(centre, where, b, "CENTRAL_WAVELENGTH_UM") * 1000.0)
        width = _band_tag(tags, "fwhm_um")
        fwhm.append(np.nan if width is None else _number(width, where, b, "FWHM_UM") * 1000.0)
    fwhm_arr = np.asarray(fwhm)
    source = "gdal imagery" if ns else "band tags (um)"
    return np.asarray(wl), None if np.isnan(fwhm_arr).any() else fwhm_arr, source


def check_plausible_nm(wavelength, where: str, keys: BandKeys = BandKeys()) -> None:
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
        f"units' (ENVI) / 'wavelength_units' tag to match the values, or pass "
        f"{keys.how(keys.sensor, 'NAME')}")


def file_wavelengths(src, where: str, keys: BandKeys = BandKeys()):
    """(wavelength nm, fwhm nm or None, source) from the file itself, or None."""
    readers = (_from_envi_domain, _from_band_tags,
               lambda s, w: _from_imagery_names(s, w, "IMAGERY"),
               lambda s, w: _from_imagery_names(s, w, None))
    for reader in readers:
        found = reader(src, where)
        if found is not None:
            if len(found[0]) != src.count:
                raise RasterMetadataError(
                    f"{where}: {found[2]} list {len(found[0])} wavelengths but the file has "
                    f"{src.count} bands; fix the metadata so there is one wavelength per band")
            check_plausible_nm(found[0], f"{where}: {found[2]}", keys)
            return found
    return None


def estimate_fwhm(wl: np.ndarray) -> np.ndarray:
    """FWHM [C] nm from band spacing, for files that give centres only (spectrometers sample
    ~FWHM): the local gap to the neighbouring centres, at least 1 nm; 10 nm for one band."""
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


def _sensor_wavelengths(src, sensor: Sensor, where: str, keys: BandKeys) -> BandTable:
    if src.count == sensor.num_bands:
        idx = list(range(sensor.num_bands))
    else:
        idx = _match_band_names(src, sensor)
        if idx is None:
            raise RasterMetadataError(
                f"{where}: the file has {src.count} bands but sensor '{sensor.name}' has "
                f"{sensor.num_bands} and the band descriptions {list(src.descriptions)[:4]}... "
                f"do not name its bands ({', '.join(sensor.band_names[:4])}...). Fix: put "
                f"wavelengths in the file (ENVI 'wavelength' or per-band tags)"
                + (f", give {keys.how(keys.wavelength, 'FILE')}" if keys.wavelength else "")
                + ", or set band descriptions to the sensor's band names")
    return BandTable(sensor.wavelength[idx].astype(np.float64),
                     sensor.fwhm[idx].astype(np.float64), f"sensor catalogue ({sensor.name})",
                     [sensor.band_names[i] for i in idx])


def resolve_sensor(src, sensor: str | None) -> Sensor | None:
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


def _missing(where: str, keys: BandKeys) -> RasterMetadataError:
    fix = f"give the sensor ({keys.how(keys.sensor, 'NAME')}, see `specaware sensors`)"
    if keys.wavelength:
        fix += f" or a wavelength file ({keys.how(keys.wavelength, 'FILE')}: centre[,fwhm] nm)"
    return RasterMetadataError(
        f"{where}: no wavelengths found (no ENVI 'wavelength', no per-band 'wavelength' tags, "
        f"no GDAL IMAGERY CENTRAL_WAVELENGTH_UM) and no sensor given. Fix: {fix}")


def band_table(src, where: str, cat: Sensor | None, wavelength_file: str | None = None,
               keys: BandKeys = BandKeys()) -> BandTable:
    """Band table of the open rasterio dataset `src`: the user's wavelength file, else the
    file's own centres, else the catalogue sensor `cat`'s (see the module docstring)."""
    names = [d or f"band{i + 1}" for i, d in enumerate(src.descriptions)]
    if wavelength_file:
        wl, fwhm = read_wavelength_file(wavelength_file, where)
        found = wl, fwhm, f"wavelength file ({Path(wavelength_file).name})"
        check_plausible_nm(wl, f"{where}: {wavelength_file}", keys)
        if len(wl) != src.count:
            raise RasterMetadataError(f"{where}: {src.count} bands but {len(wl)} wavelengths in "
                                      f"{wavelength_file}; give one per band")
    else:
        found = file_wavelengths(src, where, keys)
    if found is None and cat is not None:
        return _sensor_wavelengths(src, cat, where, keys)
    if found is None:
        raise _missing(where, keys)
    wl, fwhm, source = found
    if fwhm is None and cat is not None and cat.num_bands == src.count:
        fwhm = cat.fwhm.astype(np.float64)
    elif fwhm is None:
        log.warning("%s: no FWHM in the file; estimated from the band spacing", where)
        fwhm = estimate_fwhm(wl)
    return BandTable(np.asarray(wl, np.float64), np.asarray(fwhm, np.float64), source, names)
