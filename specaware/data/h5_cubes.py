"""EMIT and PRISMA cubes read with h5py, band axis first (docs/DATA_IN_THE_CLOUD.md, "EMIT and
PRISMA").

GDAL's classic netCDF/HDF5 drivers take the last two axes of a 3-D variable as the image, which
puts these products' band axis in the wrong place:

- EMIT L2A reflectance / L1B radiance (NetCDF4): `reflectance` or `radiance` is
  (downtrack, crosstrack, bands) float32 with `_FillValue` (-9999); centres and FWHM in nm are
  `sensor_band_parameters/wavelengths` and `sensor_band_parameters/fwhm`.
- PRISMA L1 / L2B-D (HDF-EOS5): `HDFEOS/SWATHS/PRS_<level>_HCO/Data Fields/VNIR_Cube` and
  `SWIR_Cube` are (rows, bands, cols) uint16; centres and FWHM in nm are the root attributes
  `List_Cw_Vnir` / `List_Fwhm_Vnir` / `List_Cw_Swir` / `List_Fwhm_Swir`, listed in the cube's
  band order (longest wavelength first in the products we know of); a centre of 0 (or a 0 in
  `List_Cw_*_Flags`) marks a band without data. Digital numbers become physical values with
  `L2Scale<Vnir|Swir>Min/Max` (L2: min + DN * (max - min) / 65535) or
  `ScaleFactor_<Vnir|Swir>` / `Offset_<Vnir|Swir>` (L1: DN / factor - offset).

`cube_name(path)` recognises a file (opened with h5py) and returns the scene name
`EMIT:<path>` / `PRISMA:<path>`; `remote.open_raster` opens such a name as a `CubeDataset`, the
few members of a rasterio dataset the readers use, so sharding, fine-tuning and predict read
these products window by window like any raster: bands (C) first, then rows (H), cols (W).
PRISMA bands are returned in ascending wavelength order (VNIR and SWIR interleave where they
overlap), flagged bands dropped (and logged). The GSD comes from the grid when there is one,
else from the sensor catalogue (`emit` 60 m, `prisma` 30 m).

Georeferencing (cube_geo.py): PRISMA L2D cubes carry their UTM CRS and affine transform (root
attributes `Epsg_Code`, `Product_UL/LRcorner_easting/northing`), so their tiles are
georeferenced like GeoTIFF tiles. PRISMA L1/L2B/L2C and EMIT are swath geometry: by default
their tiles carry no CRS (noted once per file). An EMIT scene named `EMIT-ORTHO:<path>`
(`specaware shard --ortho`) is orthorectified through its GLT instead: the scene is the GLT's
north-up grid with the file's `geotransform` / `spatial_ref`, every pixel the swath pixel the
GLT names (fill value where it names none). Swath tiles stay without a CRS, but
`CubeDataset.footprint(window)` gives their bounds (degrees) and centre latitude from the
file's per-pixel latitude / longitude (cube_geo.swath_footprint), read for that window only.

Remote files (http(s)://, s3://, /vsicurl/, /vsis3/) are read in place through ranged
requests (range_file.py): only the metadata and the chunks a window touches are fetched.

The layouts follow the products' published specifications; no real EMIT or PRISMA file was
available to validate against (the tests write files with the same groups, variables and
attributes via h5py). h5py is the optional extra `specaware[products]`.
"""
from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from einops import rearrange

from specaware.data import cube_geo

log = logging.getLogger(__name__)

KINDS = ("EMIT", "PRISMA", "EMIT-ORTHO")
_PRISMA_SWATH = re.compile(r"^PRS_(L1|L2[BCD])_HCO$")


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("EMIT and PRISMA products are read with h5py: "
                          "pip install 'specaware[products]'") from None
    return h5py


@dataclass
class CubePart:
    """One 3-D array of a product: `axes` "hwc" (EMIT) or "hcw" (PRISMA); `bands` the source
    band indexes kept, with their centre / FWHM (nm); physical = DN * scale + offset."""

    array: str
    axes: str
    bands: np.ndarray
    wavelength: np.ndarray
    fwhm: np.ndarray
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None


@dataclass
class Layout:
    """What `_layout` found: kind ("EMIT" / "PRISMA"), product ("L2A", "L1B", "L2D", ...),
    the cube parts, the dataset tags and the group holding the per-pixel latitude / longitude
    (cube_geo.GEOLOCATION; "" = the root)."""

    kind: str
    product: str
    parts: list[CubePart]
    tags: dict[str, str]
    geo_group: str = ""


def _attr(node, name: str, default=None):
    value = node.attrs.get(name, default)
    return value.item() if isinstance(value, np.ndarray) and value.size == 1 else value


def _emit_layout(h5) -> Layout | None:
    variable = next((v for v in ("reflectance", "radiance") if v in h5), None)
    if variable is None or "sensor_band_parameters/wavelengths" not in h5 \
            or h5[variable].ndim != 3:
        return None
    params = h5["sensor_band_parameters"]
    wl = np.asarray(params["wavelengths"][()], np.float64)
    fwhm = np.asarray(params["fwhm"][()], np.float64) if "fwhm" in params else None
    if len(wl) != h5[variable].shape[2]:
        raise ValueError(f"sensor_band_parameters/wavelengths lists {len(wl)} bands but "
                         f"{variable} has {h5[variable].shape[2]} on its band axis")
    fill = _attr(h5[variable], "_FillValue")
    part = CubePart(variable, "hwc", np.arange(len(wl)), wl,
                    fwhm if fwhm is not None else np.full(len(wl), np.nan),
                    nodata=None if fill is None else float(fill))
    level = "L2" if variable == "reflectance" else "L1"
    return Layout("EMIT", "L2A" if level == "L2" else "L1B", [part],
                  {"SPECAWARE_SENSOR": "emit", "SPECAWARE_LEVEL": level,
                   "wavelength_source": "EMIT sensor_band_parameters"})


def _prisma_part(h5, swath: str, arm: str, level: str, where: str) -> CubePart | None:
    """The VNIR or SWIR cube (`arm` "Vnir" / "Swir", as the attributes spell it)."""
    array = f"HDFEOS/SWATHS/{swath}/Data Fields/{arm.upper()}_Cube"
    if array not in h5:
        return None
    root, cube = h5["/"], h5[array]
    centre = np.asarray(_attr(root, f"List_Cw_{arm}", []), np.float64).ravel()
    if centre.size != cube.shape[1]:
        raise ValueError(f"{where}: attribute List_Cw_{arm} lists {centre.size} centres but "
                         f"{array} has {cube.shape[1]} bands on its axis 1; is the file whole?")
    fwhm = np.asarray(_attr(root, f"List_Fwhm_{arm}", np.full(centre.size, np.nan)),
                      np.float64).ravel()
    flags = np.asarray(_attr(root, f"List_Cw_{arm}_Flags", np.ones(centre.size)), int).ravel()
    keep = np.flatnonzero((centre > 0) & (flags != 0))
    if keep.size < centre.size:
        log.info("%s: %d %s band(s) flagged or with a 0 nm centre dropped", where,
                 centre.size - keep.size, arm)
    if level == "L1":
        factor = float(_attr(root, f"ScaleFactor_{arm}", 1.0))
        scale, offset = 1.0 / factor, -float(_attr(root, f"Offset_{arm}", 0.0))
    else:
        low = float(_attr(root, f"L2Scale{arm}Min", 0.0))
        high = float(_attr(root, f"L2Scale{arm}Max", 65535.0))
        scale, offset = (high - low) / 65535.0, low
    fill = _attr(cube, "_FillValue")
    return CubePart(array, "hcw", keep, centre[keep], fwhm[keep], scale, offset,
                    None if fill is None else float(fill))


def _prisma_layout(h5, where: str) -> Layout | None:
    swaths = list(h5["HDFEOS/SWATHS"]) if "HDFEOS/SWATHS" in h5 else []
    swath = next((s for s in swaths if _PRISMA_SWATH.match(s)), None)
    if swath is None:
        return None
    level = _PRISMA_SWATH.match(swath).group(1)
    parts = [p for p in (_prisma_part(h5, swath, arm, level, where) for arm in ("Vnir", "Swir"))
             if p is not None]
    if not parts:
        raise ValueError(f"{where}: PRISMA swath {swath} holds no VNIR_Cube or SWIR_Cube")
    return Layout("PRISMA", level, parts,
                  {"SPECAWARE_SENSOR": "prisma", "SPECAWARE_LEVEL": level[:2],
                   "wavelength_source": "PRISMA List_Cw/List_Fwhm attributes"},
                  geo_group=f"HDFEOS/SWATHS/{swath}")


def _layout(h5, where: str) -> Layout | None:
    """The layout of an open h5py file, or None for another product."""
    return _emit_layout(h5) or _prisma_layout(h5, where)


def _split(name: str) -> tuple[str, str] | None:
    kind, sep, path = str(name).partition(":")
    return (kind, path) if sep and kind in KINDS else None


def is_cube_name(name) -> bool:
    """True for a scene name made by `cube_name` (EMIT:<path>, PRISMA:<path>,
    EMIT-ORTHO:<path>)."""
    return _split(name) is not None


def cube_path(name: str) -> str:
    """The file of a scene name from `cube_name` (any other name unchanged)."""
    found = _split(name)
    return found[1] if found else name


def cube_name(path, ortho: bool = False) -> str | None:
    """EMIT:<path> or PRISMA:<path> when `path` is such a product, else None (also when the
    file is not HDF5, or h5py is not installed: GDAL then reads it as before). ortho: an EMIT
    file becomes EMIT-ORTHO:<path> (read through its GLT); PRISMA L2D is map-projected anyway,
    and other PRISMA levels cannot be (ValueError)."""
    if is_cube_name(path):
        kind, plain = _split(path)
        return cube_name(plain, ortho) if ortho and kind == "EMIT" else str(path)
    from specaware.data.remote import RemoteReadError, display_url

    try:
        h5py = _h5py()
    except ImportError:
        return None
    try:
        with _open_file(h5py, str(path)) as h5:
            found = _layout(h5, str(path))
    except RemoteReadError:
        raise  # 404, 403, no response: one line naming the URL
    except OSError:  # not an HDF5 file (a NetCDF3, a GeoTIFF...)
        return None
    if not found:
        return None
    if ortho and found.kind == "PRISMA" and found.product != "L2D":
        raise ValueError(f"{display_url(path)}: PRISMA {found.product} is swath geometry "
                         f"without a lookup table to orthorectify it; use the L2D product, or "
                         f"shard it without --ortho")
    kind = "EMIT-ORTHO" if ortho and found.kind == "EMIT" else found.kind
    return f"{kind}:{path}"


@contextmanager
def _open_file(h5py, path: str):
    """The h5py file at a local path, or at an http(s):// / s3:// URL (also as /vsicurl/ or
    /vsis3/), read by ranged requests (range_file.py)."""
    from specaware.data.range_file import open_remote_file, store_url

    url = store_url(path)
    if url is None:
        with h5py.File(path, "r") as h5:
            yield h5
        return
    with open_remote_file(url) as handle, h5py.File(handle, "r") as h5:
        yield h5


@contextmanager
def open_cube(name: str) -> Iterator["CubeDataset"]:
    """The CubeDataset of a scene name from `cube_name`, closed on exit."""
    kind, path = _split(name)
    h5py = _h5py()
    with _open_file(h5py, path) as h5:
        try:
            found = _layout(h5, path)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        if found is None or found.kind != kind.split("-")[0]:
            raise ValueError(f"{path}: not a {kind} product (no {kind} cube layout found); "
                             f"pass the file itself, not {name!r}")
        yield CubeDataset(name, h5, found, ortho=kind == "EMIT-ORTHO")


class CubeDataset:
    """The members of a rasterio dataset that open_scene / read_window / read_decimated /
    predict use, over the parts of one EMIT or PRISMA file: band c of the scene is
    `order[c]` = (part, position in part.bands), bands sorted by centre wavelength.
    ortho (EMIT): the scene is the GLT's output grid instead of the swath (cube_geo.Glt).
    Without a map grid, `footprint` places swath windows by the file's latitude / longitude."""

    subdatasets: list[str] = []

    def __init__(self, name: str, h5, layout: Layout, ortho: bool = False):
        from specaware.data.remote import display_url

        parts = layout.parts
        self.name, self._h5, self._parts = name, h5, parts
        self._tags = {**layout.tags, "wavelength_units": "Nanometers"}
        entries = [(w, p, j) for p, part in enumerate(parts)
                   for j, w in enumerate(part.wavelength)]
        self.order = [(p, j) for _, p, j in sorted(entries, key=lambda e: e[0])]
        height, width = self._swath_shape(h5, parts)
        where = display_url(_split(name)[1])
        self._glt = cube_geo.emit_glt(h5, where, height, width) if ortho else None
        grid = self._grid(layout, where, height, width)
        if self._glt is not None:
            height, width = self._glt.shape
        self.height, self.width, self.crs, self.transform = height, width, grid.crs, grid.transform
        self._geo = None if grid.crs is not None else cube_geo.swath_geolocation(
            h5, layout.kind, layout.geo_group, where, (height, width))
        self.count = len(self.order)
        self.descriptions = tuple(f"{parts[p].array.rsplit('/', 1)[-1]}:{parts[p].bands[j]}"
                                  for p, j in self.order)
        self.dtypes = tuple(str(h5[parts[p].array].dtype) for p, _ in self.order)
        self.nodatavals = tuple(self._fill(parts[p]) for p, _ in self.order)
        self.scales = tuple(parts[p].scale for p, _ in self.order)
        self.offsets = tuple(parts[p].offset for p, _ in self.order)

    def _grid(self, layout: Layout, where: str, height: int, width: int) -> cube_geo.Grid:
        """The scene's map grid: the GLT's (ortho), PRISMA L2D's, or none (noted once)."""
        if self._glt is not None:
            return self._glt.grid
        if layout.kind == "PRISMA":
            return cube_geo.prisma_grid(self._h5.attrs, layout.product, where, height, width)
        cube_geo.note_once(where, f"EMIT {layout.product} is in swath geometry: its tiles carry "
                           f"no CRS (their bounds come from location/lat and lon) and their "
                           f"rows/cols are downtrack/crosstrack pixels; name "
                           f"the scene EMIT-ORTHO:<file> (specaware shard --ortho) to read it "
                           f"through its GLT onto a map grid")
        return cube_geo.Grid()

    @staticmethod
    def _swath_shape(h5, parts: list[CubePart]) -> tuple[int, int]:
        first = parts[0]
        shape = h5[first.array].shape
        height, width = (shape[0], shape[1]) if first.axes == "hwc" else (shape[0], shape[2])
        for part in parts[1:]:
            other = h5[part.array].shape
            if (other[0], other[2]) != (height, width):
                raise ValueError(f"{part.array} is {other[0]} x {other[2]} pixels, "
                                 f"{first.array} {height} x {width}")
        return height, width

    def _fill(self, part: CubePart) -> float | None:
        """The part's nodata; NaN for pixels the GLT leaves empty when the file has none."""
        return part.nodata if self._glt is None or part.nodata is not None else float("nan")

    @property
    def bounds(self):
        from rasterio.coords import BoundingBox
        from rasterio.transform import array_bounds

        west, south, east, north = array_bounds(self.height, self.width, self.transform)
        return BoundingBox(west, south, east, north)

    def footprint(self, window) -> tuple[list[float] | None, float | None]:
        """(bounds [W, S, E, N] in degrees (EPSG:4326) or None, centre latitude or None) of the
        swath pixels in `window` (a rasterio Window), from the file's per-pixel latitude /
        longitude read for that window only (cube_geo.swath_footprint); (None, None) for a file
        without them. For tiles without a CRS (tiling.tile_geography): the scene gets no CRS or
        transform from this."""
        if self._geo is None:
            return None, None
        rows, cols = self._slices(window, None)
        return self._geo.footprint(rows, cols)

    def tags(self, bidx: int = 0, ns: str | None = None) -> dict[str, str]:
        if ns is not None:
            return {}
        if bidx == 0:
            return dict(self._tags)
        part, j = self._parts[self.order[bidx - 1][0]], self.order[bidx - 1][1]
        tags = {"wavelength": f"{part.wavelength[j]:.6g}"}
        if np.isfinite(part.fwhm[j]):
            tags["fwhm"] = f"{part.fwhm[j]:.6g}"
        return tags

    def read(self, indexes=None, window=None, out_dtype=None, out_shape=None) -> np.ndarray:
        """[C, h, w] digital numbers of `indexes` (1-based; one int gives [h, w]) in `window`
        (a rasterio Window; None = all), as rasterio's read. `out_shape` decimates by a whole
        step (nearest pixel), as GDAL does for an overview-less file."""
        single = isinstance(indexes, (int, np.integer))
        bands = [int(indexes)] if single else list(indexes or range(1, self.count + 1))
        rows, cols = self._slices(window, out_shape)
        dtype = np.dtype(out_dtype) if out_dtype else np.result_type(*self.dtypes)
        out = None
        for p, part in enumerate(self._parts):
            wanted = [(i, self.order[b - 1][1]) for i, b in enumerate(bands)
                      if self.order[b - 1][0] == p]
            if not wanted:
                continue
            block = self._block(part, rows, cols)
            if out is None:
                out = np.empty((len(bands), *block.shape[1:]), dtype=dtype)
            targets, sources = zip(*wanted)
            out[list(targets)] = block[part.bands[list(sources)]]
        if out_shape is not None:
            out = out[:, :out_shape[-2], :out_shape[-1]]
        return out[0] if single else out

    def _block(self, part: CubePart, rows: slice, cols: slice) -> np.ndarray:
        """[C_part, h, w] all bands of `part` at scene `rows` x `cols` (GLT gathered)."""
        array = self._h5[part.array]

        def swath(r: slice, c: slice) -> np.ndarray:
            return (rearrange(array[r, :, c], "h c w -> c h w") if part.axes == "hcw"
                    else rearrange(array[r, c, :], "h w c -> c h w"))

        if self._glt is None:
            return swath(rows, cols)
        return self._glt.gather(swath, rows, cols, self._fill(part))

    def _slices(self, window, out_shape) -> tuple[slice, slice]:
        if window is None:
            r0, c0, h, w = 0, 0, self.height, self.width
        else:
            r0, c0 = int(round(window.row_off)), int(round(window.col_off))
            h, w = int(round(window.height)), int(round(window.width))
        if r0 < 0 or c0 < 0 or r0 + h > self.height or c0 + w > self.width:
            raise ValueError(f"{self.name}: window rows {r0}..{r0 + h}, cols {c0}..{c0 + w} "
                             f"outside the {self.height} x {self.width} cube")
        step_r = max(1, h // out_shape[-2]) if out_shape is not None else 1
        step_c = max(1, w // out_shape[-1]) if out_shape is not None else 1
        return slice(r0, r0 + h, step_r), slice(c0, c0 + w, step_c)
