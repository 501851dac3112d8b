"""Products that are not one multi-band raster, made into one scene (docs/DATA_IN_THE_CLOUD.md):

- NetCDF / HDF5 with the bands as subdatasets (Sentinel-2 L3 composites: one 2-D variable per
  band) or as one 3-D cube variable (wavelength, y, x);
- one file per band (Landsat collections `*_SR_B4.TIF`, Sentinel-2 SAFE `*_B04_10m.jp2`), or a
  STAC item's per-band assets (stac.py).

Each becomes a GDAL VRT that stacks the sources band by band on the grid of the finest one,
with each band's wavelength / FWHM written as band tags, so `raster.open_scene` reads it as
any other scene (the VRT is the scene: its stem names the tiles). The VRT references the
sources by their GDAL path, so remote files stay remote and are read window by window.

Wavelengths come from the product: per-band `wavelength`/`fwhm` tags, NetCDF coordinate values
(`NETCDF_DIM_<dim>` band tags with `<dim>#units`), or the caller (STAC `eo:bands`). Without
any, band names are kept as descriptions so `--sensor` can match them to the catalogue.
A container whose subdatasets cannot be stacked unambiguously fails with the list to choose
from (`NETCDF:"file.nc":var` as the scene, or `--subdataset var`).
"""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from specaware.data.raster import RasterMetadataError
from specaware.data.remote import display_url, gdal_path, is_remote, open_raster, redact

BAND_FILE = re.compile(r"(?i)_(B\d{1,2}A?)(?:_(\d+)m)?\.(tif|tiff|jp2)$")
CONTAINERS = (".nc", ".nc4", ".h5", ".he5", ".hdf", ".hdf5")
_WORKDIR: Path | None = None


@dataclass
class BandSource:
    """One band of a stacked scene: GDAL path and 1-based band of its file, name, wavelength /
    fwhm in nm when known, and scale / offset / nodata overriding the file's (catalogue values).
    """

    path: str
    band: int = 1
    name: str = ""
    wavelength: float | None = None
    fwhm: float | None = None
    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None


def workdir() -> Path:
    """Folder for the VRTs of this process (removed with the temp dir at exit)."""
    global _WORKDIR
    if _WORKDIR is None:
        _WORKDIR = Path(tempfile.mkdtemp(prefix="specaware-vrt-"))
        import atexit
        import shutil
        atexit.register(shutil.rmtree, _WORKDIR, True)
    return _WORKDIR


# --------------------------------------------------------------------------- VRT

def _grid(sources: list[BandSource]):
    """(width, height, transform, crs, dtypes, per-source header) on the finest grid."""
    from specaware.data.netcdf_rows import gdal_flips

    headers = []
    for s in sources:
        with open_raster(s.path) as src:
            headers.append({"w": src.width, "h": src.height, "t": src.transform,
                            "crs": src.crs, "dtype": src.dtypes[s.band - 1],
                            "nodata": src.nodatavals[s.band - 1], "scale": src.scales[s.band - 1],
                            "offset": src.offsets[s.band - 1], "bounds": src.bounds,
                            "file_order": gdal_flips(src)})
    finest = min(headers, key=lambda h: abs(h["t"].a))
    for s, h in zip(sources, headers):
        h.update({k: getattr(s, k) for k in ("scale", "offset", "nodata")
                  if getattr(s, k) is not None})
        if h["crs"] != finest["crs"] or not np.allclose(h["bounds"], finest["bounds"],
                                                         atol=abs(h["t"].a)):
            raise RasterMetadataError(
                f"{display_url(s.path)}: band {s.name or s.band} covers {tuple(h['bounds'])} "
                f"in {h['crs']}, other bands {tuple(finest['bounds'])} in {finest['crs']}; "
                f"bands of one scene must share extent and CRS (warp them first)")
    return finest, headers


def _band_xml(i: int, s: BandSource, h: dict, width: int, height: int, dtype: str) -> str:
    meta = ""
    if s.wavelength is not None:
        meta += f'<MDI key="wavelength">{s.wavelength:.6g}</MDI>'
        if s.fwhm is not None:
            meta += f'<MDI key="fwhm">{s.fwhm:.6g}</MDI>'
    nodata = "" if h["nodata"] is None else f"<NoDataValue>{h['nodata']!r}</NoDataValue>"
    resample = "nearest" if h["w"] == width else "average"
    return (f'<VRTRasterBand dataType="{dtype}" band="{i}">'
            f"<Description>{escape(s.name)}</Description>{nodata}"
            f"<Offset>{h['offset']!r}</Offset><Scale>{h['scale']!r}</Scale>"
            f"<Metadata>{meta}</Metadata>"
            f'<SimpleSource resampling="{resample}"><SourceFilename relativeToVRT="0">'
            f"{escape(gdal_path(s.path))}</SourceFilename><SourceBand>{s.band}</SourceBand>"
            f'<SrcRect xOff="0" yOff="0" xSize="{h["w"]}" ySize="{h["h"]}"/>'
            f'<DstRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>'
            f"</SimpleSource></VRTRasterBand>")


_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16",
               "uint32": "UInt32", "int32": "Int32", "float32": "Float32", "float64": "Float64"}


def stack_vrt(sources: list[BandSource], name: str, tags: dict[str, str] | None = None,
              out_dir: Path | None = None) -> Path:
    """Write NAME.vrt stacking `sources` (one band each) on the finest grid; returns its path.

    Bands at a coarser resolution are resampled (average) onto the finest grid, as GDAL's
    `gdalbuildvrt -separate -resolution highest` does. tags: dataset tags (e.g. SPECAWARE_*).
    """
    if not sources:
        raise RasterMetadataError(f"{name}: no bands to stack")
    finest, headers = _grid(sources)
    dtype = np.result_type(*[h["dtype"] for h in headers]).name
    gdal_type = _GDAL_TYPES.get(dtype, "Float32")
    known = [s.wavelength is not None for s in sources]
    if any(known) and not all(known):
        missing = [s.name or s.path for s, k in zip(sources, known) if not k][:4]
        raise RasterMetadataError(f"{name}: wavelengths known for some bands only (none for "
                                  f"{missing}); give every band a wavelength or none")
    t = finest["t"]
    dataset_tags = dict(tags or {})
    if all(known):
        dataset_tags["wavelength_units"] = "Nanometers"
    if any(h["file_order"] for h in headers):  # sources read in file order (netcdf_rows.py)
        from specaware.data import netcdf_rows
        dataset_tags[netcdf_rows.TAG] = netcdf_rows.FILE_ORDER
    meta = "".join(f'<MDI key="{escape(k)}">{escape(str(v))}</MDI>'
                   for k, v in dataset_tags.items())
    srs = f"<SRS>{escape(finest['crs'].to_wkt())}</SRS>" if finest["crs"] else ""
    bands = "".join(_band_xml(i + 1, s, h, finest["w"], finest["h"], gdal_type)
                    for i, (s, h) in enumerate(zip(sources, headers)))
    xml = (f'<VRTDataset rasterXSize="{finest["w"]}" rasterYSize="{finest["h"]}">{srs}'
           f"<GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>"
           f"<Metadata>{meta}</Metadata>{bands}</VRTDataset>\n")
    out = Path(out_dir or workdir()) / f"{safe_name(name)}.vrt"
    out.write_text(xml)
    return out


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "scene"


# --------------------------------------------------------------------------- containers

def _netcdf_wavelength(src, band: int) -> tuple[float, str] | None:
    """(value, units) of the band's non-spatial NetCDF coordinate, when it names a wavelength."""
    tags = src.tags(band)
    for key, value in tags.items():
        dim = key[len("NETCDF_DIM_"):] if key.startswith("NETCDF_DIM_") else None
        if dim and re.search(r"(?i)wave|lambda", dim):
            units = src.tags().get(f"{dim}#units", "")
            return float(value), units
    return None


def _to_nm(value: float, units: str) -> float:
    from specaware.data.band_metadata import unit_factor
    return value * unit_factor(units or None, np.asarray([value]), "netcdf coordinate")


def cube_sources(path: str) -> list[BandSource] | None:
    """Bands of a 3-D subdataset whose third axis is a wavelength coordinate (or None)."""
    with open_raster(path) as src:
        found = [_netcdf_wavelength(src, b) for b in range(1, src.count + 1)]
        if src.count < 2 or not all(found):
            return None
        return [BandSource(path, b + 1, f"band{b + 1}", _to_nm(*found[b]))
                for b in range(src.count)]


def _is_band_variable(name: str) -> str | None:
    """The band name of a subdataset variable such as B04 / B8A / band_4 (else None)."""
    leaf = re.split(r"[:/]", name)[-1]
    found = re.fullmatch(r"(?i)(?:b|band_?)(\d{1,3}A?)(?:_\w+)?", leaf)
    return f"B{found.group(1).upper()}" if found else None


def subdataset_sources(path: str, subdatasets: list[str], choose: str | None
                       ) -> list[BandSource] | str:
    """Band sources of a container: the chosen variable, the one 3-D cube with wavelengths,
    or its per-band 2-D variables; else the GDAL name of the single subdataset to open."""
    where = display_url(path)
    if choose:
        picked = [s for s in subdatasets if re.split(r"[:/]", s)[-1] == choose]
        if not picked:
            raise RasterMetadataError(f"{where}: no subdataset '{choose}'; choose one of "
                                      f"{[re.split(r'[:/]', s)[-1] for s in subdatasets]}")
        return cube_sources(picked[0]) or picked[0]
    cubes = [c for c in (cube_sources(s) for s in subdatasets) if c]
    if len(cubes) == 1:
        return cubes[0]
    bands = [(n, s) for s, n in ((s, _is_band_variable(s)) for s in subdatasets) if n]
    if not cubes and len(bands) >= 2:
        return [BandSource(s, 1, n) for n, s in sorted(bands, key=lambda b: _band_key(b[0]))]
    names = "\n  ".join(redact(s) for s in subdatasets)
    raise RasterMetadataError(
        f"{where}: ambiguous product, {len(subdatasets)} subdatasets and no single spectral "
        f"cube; choose one with --subdataset NAME or pass it as the scene:\n  {names}")


def _band_key(name: str) -> tuple[int, str]:
    digits = re.search(r"\d+", name)
    return (int(digits.group(0)) if digits else 0, name)


def band_files(folder: Path) -> list[BandSource]:
    """One source per band file of a Landsat / Sentinel-2 product folder (finest copy of each
    band when a SAFE holds several resolutions), in band order."""
    best: dict[str, tuple[int, Path]] = {}
    for file in sorted(folder.rglob("*")):
        found = BAND_FILE.search(file.name)
        if not found:
            continue
        band, resolution = found.group(1).upper(), int(found.group(2) or 0)
        band = re.sub(r"^B0*", "B", band)
        if band not in best or resolution < best[band][0]:
            best[band] = (resolution, file)
    return [BandSource(str(f), 1, b) for b, (_, f) in sorted(best.items(),
                                                              key=lambda kv: _band_key(kv[0]))]


def _quoted(name: str, path) -> str:
    """GDAL subdataset `name` with the file part in quotes when `path` is remote: rasterio
    lists `netcdf:/vsicurl/http://host:8000/f.nc:var`, which GDAL cannot split at the
    colons of the URL ("Failed to parse NETCDF: prefix string"); `NETCDF:"/vsicurl/...":var`
    it can."""
    file = gdal_path(path)
    driver, _, rest = name.partition(":")
    if not is_remote(path) or not rest.startswith(file):
        return name
    return f'{driver.upper()}:"{file}"{rest[len(file):]}'


def as_scene(path, subdataset: str | None = None) -> str | Path:
    """The path `open_scene` should read for `path`: unchanged for an ordinary raster, a VRT
    for a container of subdatasets or a folder of band files (see the module docstring)."""
    if not is_remote(path) and Path(path).is_dir():
        sources = band_files(Path(path))
        if not sources:
            raise RasterMetadataError(f"{path}: a folder, but no band files (*_B4.TIF, "
                                      f"*_B04_10m.jp2) in it; pass the raster files instead")
        return stack_vrt(sources, Path(path).name.removesuffix(".SAFE"))
    if not str(path).lower().endswith(CONTAINERS) and not subdataset:
        return path
    if not subdataset:
        from specaware.data.h5_cubes import cube_name
        cube = cube_name(path)  # EMIT / PRISMA: GDAL would put the band axis in the wrong place
        if cube:
            return cube
    with open_raster(path) as src:
        subdatasets = [_quoted(name, path) for name in src.subdatasets]
    if subdatasets:
        found = subdataset_sources(str(path), subdatasets, subdataset)
        if isinstance(found, str):
            return found
    else:  # one variable: GDAL opens it as the file itself
        found = cube_sources(str(path))
        if not found:
            return path
    stem = Path(display_url(path)).stem + (f"-{subdataset}" if subdataset else "")
    coordinate = all(s.wavelength is not None for s in found)
    return stack_vrt(found, stem, {"wavelength_source": "NetCDF wavelength coordinate"}
                     if coordinate else None)
