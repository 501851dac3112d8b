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
- Swath footprints: a swath tile has no CRS, but the per-pixel latitude / longitude arrays of
  the file (`GEOLOCATION`: EMIT `location/lat` / `location/lon`, PRISMA `Geolocation
  Fields/Latitude` / `Longitude`, L1 `Latitude_VNIR` / `Longitude_VNIR`) give its
  `swath_footprint`: bounds [W, S, E, N] in degrees (EPSG:4326) from the min / max of its
  pixels' coordinates and the centre latitude, read for the tile's window only. Across the
  antimeridian west > east (RFC 7946 section 5.2, as rasterio's transform_bounds gives for
  georeferenced tiles), never a whole-globe box; a tile around a pole spans all longitudes and
  reaches that pole.
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
# Per-pixel (latitude, longitude) datasets of swath products, first present wins, [H, W] like
# the cube's rows x cols (EMIT: downtrack x crosstrack; PRISMA: axes 0 and 2 of its cubes).
# PRISMA L1 has one pair per arm; SWIR is co-registered to VNIR, so VNIR's comes first.
GEOLOCATION = {
    "EMIT": (("location/lat", "location/lon"),),
    "PRISMA": (("Geolocation Fields/Latitude", "Geolocation Fields/Longitude"),
               ("Geolocation Fields/Latitude_VNIR", "Geolocation Fields/Longitude_VNIR"),
               ("Geolocation Fields/Latitude_SWIR", "Geolocation Fields/Longitude_SWIR")),
}
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
                  f"under Geolocation Fields), not map-projected: its tiles carry no CRS (their "
                  f"bounds come from those arrays) and their rows/cols are along-/across-track "
                  f"pixels; use the L2D product for "
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


def _longitude_arc(lon: np.ndarray) -> tuple[float, float] | None:
    """(west, east) of the shortest arc of longitude holding every value of `lon` (degrees in
    [-180, 180]; west > east when the arc crosses the antimeridian), or None when no arc under
    180 degrees holds them all (the pixels surround a pole)."""
    values = np.unique(lon)
    gaps = np.diff(values, append=values[0] + 360.0)  # the last gap wraps round to the first
    k = int(np.argmax(gaps))                           # the arc is all but the widest gap
    if gaps[k] < 180.0:
        return None
    return float(values[(k + 1) % values.size]), float(values[k])


def swath_footprint(lat: np.ndarray, lon: np.ndarray) -> tuple[list[float] | None, float | None]:
    """(bounds [W, S, E, N] in degrees or None, centre latitude or None) of the pixels whose
    `lat` / `lon` (degrees, same shape) are geolocated: finite, |lat| <= 90 and |lon| <= 360
    (fill values such as -9999 are neither; 180..360 is taken as -180..0). The centre latitude
    is the middle of the latitude range. Across the antimeridian west > east; around a pole the
    box spans all longitudes and reaches the pole (see the module docstring)."""
    lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    ok = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90.0) & (np.abs(lon) <= 360.0)
    if not ok.any():
        return None, None
    lat, lon = lat[ok], lon[ok]
    lon = np.where(np.abs(lon) > 180.0, (lon + 180.0) % 360.0 - 180.0, lon)
    south, north = float(lat.min()), float(lat.max())
    arc = _longitude_arc(lon)
    if arc is None:
        arc = (-180.0, 180.0)
        south, north = (south, 90.0) if lat.mean() > 0 else (-90.0, north)
    bounds = [round(v, 7) for v in (arc[0], south, arc[1], north)]
    return bounds, (south + north) / 2.0


@dataclass
class Geolocation:
    """A swath's per-pixel latitude / longitude (degrees; [H, W] h5py datasets, read window by
    window) named `names` in the file."""

    lat: object
    lon: object
    names: tuple[str, str]

    def footprint(self, rows: slice, cols: slice) -> tuple[list[float] | None, float | None]:
        """swath_footprint of the pixels `rows` x `cols` (slices), reading only those."""
        return swath_footprint(self.lat[rows, cols], self.lon[rows, cols])


def swath_geolocation(h5, kind: str, group: str, where: str,
                      shape: tuple[int, int]) -> Geolocation | None:
    """The Geolocation of an open `kind` ("EMIT" / "PRISMA") file whose arrays sit under
    `group` ("" for EMIT, the PRISMA swath group), if it holds one of GEOLOCATION's pairs of
    the cube's `shape` (rows, cols); else None, noted once (tiles then carry no bounds)."""
    pairs = [tuple(f"{group}/{n}".lstrip("/") for n in pair) for pair in GEOLOCATION[kind]]
    found = next((p for p in pairs if p[0] in h5 and p[1] in h5), None)
    if found is None:
        wanted = " or ".join(f"{lat} + {lon}" for lat, lon in pairs)
        note_once(where, f"no per-pixel latitude/longitude ({wanted}): its swath tiles get no "
                  f"bounds and climate_zone 'unknown'")
        return None
    lat, lon = h5[found[0]], h5[found[1]]
    if lat.shape != shape or lon.shape != shape:
        note_once(where, f"{found[0]} {lat.shape} / {found[1]} {lon.shape} do not match the "
                  f"{shape[0]} x {shape[1]} cube: swath tiles get no bounds")
        return None
    return Geolocation(lat, lon, found)
