"""Where the pixels of EMIT and PRISMA cubes lie on the ground (docs/DATA_IN_THE_CLOUD.md,
"EMIT and PRISMA: georeferencing").

- PRISMA L2D is map-projected (UTM): the root attributes `Epsg_Code` and
  `Product_ULcorner_easting` / `_northing`, `Product_LRcorner_easting` / `_northing` (metres)
  give the grid. They are read as the *centres* of the upper-left and lower-right pixels, as the
  readers we checked do (prismaread, EnMAP-Box's PRISMA L2D import); the pixel size is their
  span over (pixels - 1), and the affine transform's origin is the upper-left pixel's outer
  corner, half a pixel beyond that centre (GDAL's convention).
- PRISMA L1 / L2B / L2C are in swath geometry (per-pixel Latitude / Longitude arrays): no map
  grid, noted once per file.
- EMIT L1B / L2A are in swath geometry too. Their geometric lookup table (GLT:
  `location/glt_x`, `location/glt_y`, both [H', W'] on the output grid) names, for each pixel of
  an orthorectified north-up grid, the 1-based swath column (glt_x, crosstrack) and row
  (glt_y, downtrack) it takes, 0 = no data; the global attributes `geotransform` (GDAL order,
  upper-left pixel corner) and `spatial_ref` (WKT) describe that grid. `Glt.gather` reads an
  orthorectified window through it (nearest swath pixel, as the GLT defines it), reading only
  the GLT rows and columns of that window.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from rasterio import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError

log = logging.getLogger(__name__)

PRISMA_EPSG = "Epsg_Code"
PRISMA_CORNERS = ("Product_ULcorner_easting", "Product_ULcorner_northing",
                  "Product_LRcorner_easting", "Product_LRcorner_northing")
_NOTED: set[tuple[str, str]] = set()
BLOCK = 128  # output pixels a side gathered from one swath read (Glt.gather)


@dataclass
class Grid:
    """A cube's georeferencing: crs (rasterio CRS, None = not map-projected) and transform
    (pixel corner (col, row) -> map x, y; identity when crs is None)."""

    crs: CRS | None = None
    transform: Affine = field(default_factory=Affine.identity)


def note_once(where: str, message: str) -> None:
    """Log `message` about file `where` once per process (cubes are reopened for every strip)."""
    if (where, message) not in _NOTED:
        _NOTED.add((where, message))
        log.warning("%s: %s", where, message)


def _float(attrs, name: str) -> float | None:
    value = attrs.get(name)
    if value is None:
        return None
    value = np.asarray(value).ravel()
    try:
        return float(value[0].decode() if isinstance(value[0], bytes) else value[0])
    except (ValueError, IndexError):
        return None


def prisma_grid(attrs, level: str, where: str, height: int, width: int) -> Grid:
    """The map grid of a PRISMA cube of `height` x `width` pixels from the file's root
    attributes `attrs`: EPSG + corner-pixel centres for L2D; none (noted once) otherwise."""
    if level != "L2D":
        note_once(where, f"PRISMA {level} is in swath geometry (per-pixel Latitude/Longitude "
                  f"under Geolocation Fields), not map-projected: its tiles carry no CRS and "
                  f"their rows/cols are along-/across-track pixels; use the L2D product for "
                  f"map-projected tiles")
        return Grid()
    values = [_float(attrs, name) for name in (PRISMA_EPSG, *PRISMA_CORNERS)]
    missing = [n for n, v in zip((PRISMA_EPSG, *PRISMA_CORNERS), values) if v is None]
    if missing:
        note_once(where, f"PRISMA L2D without the root attribute(s) {', '.join(missing)}: "
                  f"tiles carry no CRS (is the file whole?)")
        return Grid()
    epsg, ul_x, ul_y, lr_x, lr_y = values
    dx = (lr_x - ul_x) / max(width - 1, 1)
    dy = (ul_y - lr_y) / max(height - 1, 1)
    try:
        crs = CRS.from_epsg(int(epsg))
    except CRSError:
        crs = None
    if crs is None or dx <= 0 or dy <= 0 or min(width, height) < 2:
        note_once(where, f"PRISMA L2D grid not usable (Epsg_Code {epsg:g}, upper-left "
                  f"{ul_x:g}, {ul_y:g}, lower-right {lr_x:g}, {lr_y:g} for {height} x {width} "
                  f"pixels): tiles carry no CRS")
        return Grid()
    return Grid(crs, Affine(dx, 0.0, ul_x - dx / 2, 0.0, -dy, ul_y + dy / 2))


@dataclass
class Glt:
    """EMIT's geometric lookup table on its output grid of `shape` (H', W') pixels:
    `lookup(rows, cols)` -> (swath rows, swath cols) int64 [h, w] of the grid pixels in
    `rows` x `cols` (slices), 0-based, -1 where the GLT names no swath pixel; `grid` the
    output grid. Read window by window (a whole GLT is two H' x W' int32 arrays)."""

    lookup: Callable[[slice, slice], tuple[np.ndarray, np.ndarray]]
    shape: tuple[int, int]
    grid: Grid

    @classmethod
    def from_arrays(cls, rows: np.ndarray, cols: np.ndarray, grid: Grid) -> "Glt":
        """A GLT held in memory: rows / cols int [H', W'], 0-based, -1 = no swath pixel."""
        return cls(lambda r, c: (rows[r, c], cols[r, c]), rows.shape, grid)

    def gather(self, read: Callable[[slice, slice], np.ndarray], rows: slice, cols: slice,
               fill: float) -> np.ndarray:
        """[C, h, w] output pixels `rows` x `cols` of the grid (slices; a step decimates).
        `read(swath_rows, swath_cols)` -> [C, h', w'] reads one swath block; the window is
        gathered BLOCK x BLOCK output pixels at a time, each from the one swath block that
        covers it, so a strip across a tilted swath never reads the swath's whole bounding box.
        Pixels the GLT leaves empty are `fill`."""
        want_r, want_c = self.lookup(rows, cols)
        out = None
        for r0 in range(0, want_r.shape[0], BLOCK):
            for c0 in range(0, want_r.shape[1], BLOCK):
                part = np.s_[r0:r0 + BLOCK, c0:c0 + BLOCK]
                block = self._gather_block(read, want_r[part], want_c[part], fill)
                if out is None:
                    out = np.empty((block.shape[0], *want_r.shape), block.dtype)
                out[(slice(None), *part)] = block
        if out is None:  # an empty window
            probe = read(slice(0, 1), slice(0, 1))
            out = np.empty((probe.shape[0], *want_r.shape), probe.dtype)
        return out

    @staticmethod
    def _gather_block(read, want_r: np.ndarray, want_c: np.ndarray, fill: float) -> np.ndarray:
        inside = want_r >= 0
        if not inside.any():
            probe = read(slice(0, 1), slice(0, 1))
            return np.full((probe.shape[0], *want_r.shape), fill, probe.dtype)
        r0, c0 = int(want_r[inside].min()), int(want_c[inside].min())
        block = read(slice(r0, int(want_r[inside].max()) + 1),
                     slice(c0, int(want_c[inside].max()) + 1))
        out = np.full((block.shape[0], *want_r.shape), fill, block.dtype)
        out[:, inside] = block[:, want_r[inside] - r0, want_c[inside] - c0]
        return out


def emit_glt(h5, where: str, swath_height: int, swath_width: int) -> Glt:
    """The GLT and output grid of an open EMIT file; ValueError naming the file and the
    missing / inconsistent member otherwise."""
    need = [n for n in ("location/glt_x", "location/glt_y") if n not in h5]
    need += [n for n in ("geotransform", "spatial_ref") if n not in h5.attrs]
    if need:
        raise ValueError(f"{where}: cannot orthorectify, no {', '.join(need)} (an EMIT L2A / "
                         f"L1B file holds them); shard it without --ortho (swath geometry)")
    gx, gy = h5["location/glt_x"], h5["location/glt_y"]
    if gx.shape != gy.shape or gx.ndim != 2:
        raise ValueError(f"{where}: location/glt_x {gx.shape} and glt_y {gy.shape} must be "
                         f"2-D arrays of one shape")

    def lookup(rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        x, y = np.asarray(gx[rows, cols], np.int64), np.asarray(gy[rows, cols], np.int64)
        empty = (x <= 0) | (y <= 0)   # 0 = no swath pixel (a negative _FillValue too)
        if (x[~empty] > swath_width).any() or (y[~empty] > swath_height).any():
            raise ValueError(f"{where}: location/glt_x/glt_y name swath pixels outside the "
                             f"{swath_height} x {swath_width} swath (1-based, 0 = no data)")
        return np.where(empty, -1, y - 1), np.where(empty, -1, x - 1)

    gt = [float(v) for v in np.asarray(h5.attrs["geotransform"]).ravel()]
    wkt = h5.attrs["spatial_ref"]
    wkt = wkt.decode() if isinstance(wkt, bytes) else str(wkt)
    try:
        crs = CRS.from_wkt(wkt)
    except CRSError as err:
        raise ValueError(f"{where}: attribute spatial_ref is not a WKT CRS ({err})") from None
    if len(gt) != 6:
        raise ValueError(f"{where}: attribute geotransform has {len(gt)} values, expected 6 "
                         f"(GDAL order: x0, dx, rx, y0, ry, dy)")
    return Glt(lookup, gx.shape, Grid(crs, Affine.from_gdal(*gt)))
