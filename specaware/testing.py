"""Small generated raster and shard fixtures (no downloaded data): the test suite, the benchmarks
and users writing their own tests build scenes and shards with these.

Scenes:  synthetic_cube, write_geotiff (wavelengths as band tags / GDAL IMAGERY / ENVI domain,
         nm or micrometres), write_envi (raw cube + hand-written .hdr, as real ENVI files come),
         write_emit_nc / write_prisma_he5 (those products' HDF5 layouts, band axis not first),
         write_netcdf (CF-georeferenced NetCDF, or without CF axes, rows north or south first).
Shards:  write_tiny_shards (a few tar shards + manifest via the real codec and writer),
         corrupt_shard (truncate a tar or garble a member).
Keep everything tiny: tests run on 2 shared CPU cores.
"""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import rasterio
from rasterio.transform import from_origin

from specaware.data.codec import encode_sample
from specaware.data.sample import make_sample
from specaware.data.shard import ShardWriter, make_key
from specaware.sensors import absorption_mask, get_sensor

UTM_11N = "EPSG:32611"
ORIGIN = (500000.0, 4100000.0)  # easting, northing of the upper-left corner (~37 N, -117 E)


def _endmembers(wavelength: np.ndarray) -> np.ndarray:
    """[3, C] smooth water / vegetation / soil-like reflectance spectra (0..0.6)."""
    wl = np.asarray(wavelength, dtype=np.float64)
    water = 0.06 * np.exp(-((wl - 480.0) / 120.0) ** 2) + 0.005
    red_edge = 1.0 / (1.0 + np.exp(-(wl - 715.0) / 12.0))
    vegetation = 0.04 + 0.05 * np.exp(-((wl - 550.0) / 30.0) ** 2) + 0.42 * red_edge * np.exp(
        -np.clip(wl - 1300.0, 0, None) / 900.0)
    soil = 0.08 + 0.30 * (1 - np.exp(-(wl - 350.0) / 700.0))
    return np.stack([water, vegetation, soil]).astype(np.float32)


def synthetic_cube(wavelength: Sequence[float], height: int = 32, width: int = 32,
                   seed: int = 0, noise: float = 0.003) -> np.ndarray:
    """float32 [C, H, W] reflectance: smooth abundance fields of water/vegetation/soil spectra."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    fields = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 6.3)
        fields.append(np.exp(2.0 * np.sin(2 * np.pi * (fx * xx + fy * yy) + phase)))
    abundance = np.stack(fields) / np.sum(fields, axis=0)  # [3, H, W], sums to 1
    cube = np.einsum("kc,khw->chw", _endmembers(np.asarray(wavelength)), abundance)
    cube += rng.normal(0.0, noise, cube.shape)
    return cube.astype(np.float32)


def _fmt(values) -> str:
    return ", ".join(f"{v:.6g}" for v in values)


def write_geotiff(path, cube: np.ndarray, *, wavelength=None, fwhm=None, units: str = "nm",
                  style: str | None = "band_tags", nodata: float | None = None,
                  crs: str | None = UTM_11N, origin=ORIGIN, gsd: float = 2.0,
                  dtype: str = "float32", tags: dict[str, Any] | None = None,
                  band_names: Sequence[str] | None = None, blocksize: int = 16) -> Path:
    """Write `cube` [C, H, W] as a tiled GeoTIFF.

    style: where the wavelengths go: "band_tags" (per-band `wavelength`/`fwhm` tags plus a
    `wavelength_units` tag), "imagery" (GDAL IMAGERY domain CENTRAL_WAVELENGTH_UM/FWHM_UM,
    always micrometres), "envi" (ENVI metadata domain lists) or None (no wavelengths).
    units: "nm" or "um" for the values written by "band_tags" / "envi".
    """
    path = Path(path)
    c, h, w = cube.shape
    factor = 1e-3 if units == "um" else 1.0
    profile = dict(driver="GTiff", width=w, height=h, count=c, dtype=dtype, nodata=nodata,
                   crs=crs, transform=from_origin(origin[0], origin[1], gsd, gsd) if crs else None,
                   tiled=True, blockxsize=blocksize, blockysize=blocksize)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(cube.astype(dtype))
        if tags:
            dst.update_tags(**{k: str(v) for k, v in tags.items()})
        for i in range(c):
            if band_names is not None:
                dst.set_band_description(i + 1, band_names[i])
            if style == "band_tags" and wavelength is not None:
                band = {"wavelength": f"{wavelength[i] * factor:.6g}"}
                if fwhm is not None:
                    band["fwhm"] = f"{fwhm[i] * factor:.6g}"
                dst.update_tags(i + 1, **band)
            elif style == "imagery" and wavelength is not None:
                band = {"CENTRAL_WAVELENGTH_UM": f"{wavelength[i] / 1000.0:.6g}"}
                if fwhm is not None:
                    band["FWHM_UM"] = f"{fwhm[i] / 1000.0:.6g}"
                dst.update_tags(i + 1, ns="IMAGERY", **band)
        if style == "band_tags" and wavelength is not None:
            dst.update_tags(wavelength_units="Micrometers" if units == "um" else "Nanometers")
        if style == "envi" and wavelength is not None:
            envi = {"wavelength": "{" + _fmt(np.asarray(wavelength) * factor) + "}",
                    "wavelength_units": "Micrometers" if units == "um" else "Nanometers"}
            if fwhm is not None:
                envi["fwhm"] = "{" + _fmt(np.asarray(fwhm) * factor) + "}"
            dst.update_tags(ns="ENVI", **envi)
    return path


def write_envi(path, cube: np.ndarray, *, wavelength=None, fwhm=None, units: str = "nm",
               nodata: float | None = None, crs_zone: int | None = 11, origin=ORIGIN,
               gsd: float = 2.0, band_names: Sequence[str] | None = None,
               interleave: str = "bsq", extra_header: str = "") -> Path:
    """Write a raw float32 cube + hand-written ENVI header, the way ENVI/instrument teams ship.

    `path` is the data file (e.g. scene.img); the header goes to scene.hdr. units "nm" writes
    `wavelength units = Nanometers`, "um" writes Micrometers with values in micrometres.
    """
    path = Path(path)
    c, h, w = cube.shape
    order = {"bsq": (0, 1, 2), "bil": (1, 0, 2), "bip": (1, 2, 0)}[interleave]
    np.ascontiguousarray(cube.astype("<f4").transpose(order)).tofile(path)
    lines = ["ENVI", "description = {specaware test scene}", f"samples = {w}", f"lines = {h}",
             f"bands = {c}", "header offset = 0", "file type = ENVI Standard", "data type = 4",
             f"interleave = {interleave}", "byte order = 0"]
    if crs_zone is not None:
        lines.append(f"map info = {{UTM, 1.000, 1.000, {origin[0]:.3f}, {origin[1]:.3f}, "
                     f"{gsd}, {gsd}, {crs_zone}, North, WGS-84, units=Meters}}")
    if nodata is not None:
        lines.append(f"data ignore value = {nodata:g}")
    if band_names is not None:
        lines.append("band names = {" + ", ".join(band_names) + "}")
    if wavelength is not None:
        factor = 1e-3 if units == "um" else 1.0
        lines.append(f"wavelength units = {'Micrometers' if units == 'um' else 'Nanometers'}")
        lines.append("wavelength = {" + _fmt(np.asarray(wavelength) * factor) + "}")
        if fwhm is not None:
            lines.append("fwhm = {" + _fmt(np.asarray(fwhm) * factor) + "}")
    path.with_suffix(".hdr").write_text("\n".join(lines) + "\n" + extra_header)
    return path


def write_netcdf(path, variables: dict, *, wavelength=None, units: str = "nm", cf: bool = True,
                 south_first: bool = False, origin=ORIGIN, gsd: float = 2.0,
                 crs_epsg: int | None = 32611) -> Path:
    """A NetCDF4 file (netCDF4) of `variables`: name -> [C, H, W] (dims wavelength or band,
    y, x) or [H, W] arrays, row 0 the northern edge (`origin` its upper-left corner, `gsd` m).

    cf: x/y coordinate variables with CF `standard_name` projection_x/y_coordinate, `axis` and
    `units`, and a grid_mapping variable `crs` (`crs_wkt`, EPSG `crs_epsg`) named by every
    variable, so GDAL georeferences them; False writes x/y values with units only (GDAL then
    finds no y axis). south_first: rows stored south to north (y increasing), as many
    climate files are; the arrays given stay north-up. wavelength: a coordinate of the third
    axis in `units`."""
    import netCDF4
    from rasterio.crs import CRS

    path = Path(path)
    h, w = next(iter(variables.values())).shape[-2:]
    order = slice(None, None, -1) if south_first else slice(None)
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("y", h)
        nc.createDimension("x", w)
        y, x = nc.createVariable("y", "f8", ("y",)), nc.createVariable("x", "f8", ("x",))
        y[:] = (origin[1] - gsd * (np.arange(h) + 0.5))[order]
        x[:] = origin[0] + gsd * (np.arange(w) + 0.5)
        y.units = x.units = "m"
        if cf:
            y.standard_name, y.axis = "projection_y_coordinate", "Y"
            x.standard_name, x.axis = "projection_x_coordinate", "X"
            crs = nc.createVariable("crs", "i4")
            crs.grid_mapping_name = "transverse_mercator"
            crs.crs_wkt = CRS.from_epsg(crs_epsg).to_wkt()
        if wavelength is not None:
            nc.createDimension("wavelength", len(wavelength))
            coord = nc.createVariable("wavelength", "f8", ("wavelength",))
            coord[:], coord.units = wavelength, units
        for name, array in variables.items():
            dims = ("y", "x") if array.ndim == 2 else (
                ("wavelength" if wavelength is not None else "band"), "y", "x")
            if array.ndim == 3 and wavelength is None and "band" not in nc.dimensions:
                nc.createDimension("band", array.shape[0])
            var = nc.createVariable(name, "f4", dims)
            if cf:
                var.grid_mapping = "crs"
            var[:] = array[..., order, :]
    return path


EMIT_GEOTRANSFORM = (-117.0, 0.000542, 0.0, 37.0, 0.0, -0.000542)  # GDAL order, degrees
WGS84_WKT = ('GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],'
             'PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433],AUTHORITY["EPSG","4326"]]')


def _grid_latlon(shape, geotransform) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) float64 [H, W]: the pixel centres of a north-up GDAL `geotransform`."""
    rows, cols = np.indices(shape)
    x0, dx, _, y0, _, dy = geotransform
    return y0 + (rows + 0.5) * dy, x0 + (cols + 0.5) * dx


def write_emit_nc(path, cube: np.ndarray, *, wavelength, fwhm, fill: float = -9999.0,
                  variable: str = "reflectance", glt=None,
                  geotransform=EMIT_GEOTRANSFORM, latlon=None,
                  geolocation: bool = True) -> Path:
    """An EMIT L2A-style NetCDF4/HDF5 file (h5py): `variable` (downtrack, crosstrack, bands)
    float32 with `_FillValue`, `sensor_band_parameters/{wavelengths,fwhm,good_wavelengths}`
    in nm, a `location` group with lat / lon and the GLT `glt_x` / `glt_y` (1-based swath
    col / row of each output pixel, 0 = no data; `glt` = (glt_x, glt_y) int arrays of the
    output grid's shape, default: the swath itself, 1:1), and the global attributes
    `geotransform` (GDAL order) and `spatial_ref` (WKT, WGS 84) of the output grid; `cube` is
    [C, H, W] (NaN pixels are written as `fill`). `latlon`: the swath pixels' (lat, lon)
    degrees [H, W] (float64, `_FillValue` -9999 as EMIT's); default: the geotransform grid's
    pixel centres (right for the default 1:1 GLT). geolocation=False writes no lat / lon."""
    import h5py

    path = Path(path)
    data = np.where(np.isnan(cube), np.float32(fill), cube).astype(np.float32)
    if glt is None:
        rows, cols = np.indices(cube.shape[1:])
        glt = (cols + 1, rows + 1)
    lat, lon = latlon if latlon is not None else _grid_latlon(cube.shape[1:], geotransform)
    with h5py.File(path, "w") as h5:
        h5.attrs["title"] = "EMIT L2A Estimated Surface Reflectance (specaware test file)"
        h5.attrs["geotransform"] = np.asarray(geotransform, np.float64)
        h5.attrs["spatial_ref"] = WGS84_WKT
        h5.create_dataset(variable, data=data.transpose(1, 2, 0), chunks=True)
        h5[variable].attrs["_FillValue"] = np.float32(fill)
        params = h5.create_group("sensor_band_parameters")
        params["wavelengths"] = np.asarray(wavelength, np.float32)
        params["fwhm"] = np.asarray(fwhm, np.float32)
        params["good_wavelengths"] = np.ones(len(wavelength), np.float32)
        location = h5.create_group("location")
        if geolocation:
            for name, values in (("lat", lat), ("lon", lon)):
                location.create_dataset(name, data=np.asarray(values, np.float64), chunks=True)
                location[name].attrs["_FillValue"] = np.float64(-9999.0)
        location["glt_x"] = np.asarray(glt[0], np.int32)
        location["glt_y"] = np.asarray(glt[1], np.int32)
    return path


PRISMA_UL_CENTRE = (600015.0, 4500015.0)  # UTM 33N (EPSG:32633) easting, northing in m
PRISMA_LATLON_GEOTRANSFORM = (12.0, 0.00038, 0.0, 45.0, 0.0, -0.00027)  # ~30 m at 45 N


def write_prisma_he5(path, vnir: np.ndarray, swir: np.ndarray, *, cw_vnir, fwhm_vnir, cw_swir,
                     fwhm_swir, level: str = "L2D", scale=((0.0, 1.0), (0.0, 1.0)),
                     epsg: int | None = 32633, ul_centre=PRISMA_UL_CENTRE,
                     pixel: float = 30.0, latlon=None, geolocation: bool = True) -> Path:
    """A PRISMA-style HE5 file (h5py): uint16 `VNIR_Cube` / `SWIR_Cube` stored (rows, bands,
    cols) under HDFEOS/SWATHS/PRS_<level>_HCO/Data Fields, centres / FWHM in nm as root
    attributes List_Cw_* / List_Fwhm_* (in cube band order; 0 = no data), L2 scaling
    attributes L2Scale<Vnir|Swir>Min/Max from `scale` ((min, max) per arm). `vnir` and `swir`
    are [C, H, W] digital numbers. L2D files get the map grid as root attributes: `Epsg_Code`
    (`epsg`; None writes none) and Product_UL/LR/UR/LLcorner_easting/_northing, the centres of
    the corner pixels (`ul_centre`, `pixel` metres). Every level gets per-pixel latitude /
    longitude (float32 [H, W], the cube's axes 0 and 2) under Geolocation Fields: `Latitude` /
    `Longitude`, for L1 `Latitude_VNIR` / `Longitude_VNIR` and `_SWIR`; `latlon` = (lat, lon)
    degrees, default a grid of about 30 m from 45 N, 12 E; geolocation=False writes none."""
    import h5py

    path = Path(path)
    _, height, width = vnir.shape
    with h5py.File(path, "w") as h5:
        swath = h5.create_group(f"HDFEOS/SWATHS/PRS_{level}_HCO")
        fields = swath.create_group("Data Fields")
        for arm, cube, cw, fwhm, (low, high) in (("Vnir", vnir, cw_vnir, fwhm_vnir, scale[0]),
                                                 ("Swir", swir, cw_swir, fwhm_swir, scale[1])):
            fields.create_dataset(f"{arm.upper()}_Cube", data=cube.astype(np.uint16)
                                  .transpose(1, 0, 2), chunks=True)
            h5.attrs[f"List_Cw_{arm}"] = np.asarray(cw, np.float32)
            h5.attrs[f"List_Fwhm_{arm}"] = np.asarray(fwhm, np.float32)
            h5.attrs[f"List_Cw_{arm}_Flags"] = (np.asarray(cw) > 0).astype(np.int8)
            h5.attrs[f"L2Scale{arm}Min"] = np.float32(low)
            h5.attrs[f"L2Scale{arm}Max"] = np.float32(high)
        h5.attrs["Product_ID"] = f"PRS_{level}_HCO"
        if level == "L2D" and epsg is not None:
            h5.attrs["Epsg_Code"] = np.int32(epsg)
            east = {"UL": 0, "LL": 0, "UR": width - 1, "LR": width - 1}
            south = {"UL": 0, "UR": 0, "LL": height - 1, "LR": height - 1}
            for corner in east:
                h5.attrs[f"Product_{corner}corner_easting"] = \
                    np.float64(ul_centre[0] + pixel * east[corner])
                h5.attrs[f"Product_{corner}corner_northing"] = \
                    np.float64(ul_centre[1] - pixel * south[corner])
        if geolocation:
            lat, lon = latlon if latlon is not None else \
                _grid_latlon((height, width), PRISMA_LATLON_GEOTRANSFORM)
            geo = swath.create_group("Geolocation Fields")
            for arm in ("_VNIR", "_SWIR") if level == "L1" else ("",):
                geo[f"Latitude{arm}"] = np.asarray(lat, np.float32)
                geo[f"Longitude{arm}"] = np.asarray(lon, np.float32)
    return path


def sensor_bands(sensor: str, max_bands: int | None = None):
    """(wavelength, fwhm, band_names) of a catalogue sensor, evenly thinned to `max_bands`."""
    s = get_sensor(sensor)
    idx = np.arange(s.num_bands)
    if max_bands is not None and s.num_bands > max_bands:
        idx = np.linspace(0, s.num_bands - 1, max_bands).round().astype(int)
    return s.wavelength[idx], s.fwhm[idx], [s.band_names[i] for i in idx]


def write_tiny_shards(out_dir, *, sensors: Sequence[str] = ("aviris-ng", "sentinel-2a"),
                      max_bands: int | None = 24, num_shards: int = 2, per_shard: int = 4,
                      tile: int = 16, dtype: str = "float16", seed: int = 0,
                      invalid_fraction: float = 0.05, labels: int | None = None,
                      overwrite: bool = False,
                      descriptors: Callable[[int], dict[str, Any]] | None = None,
                      ) -> dict[str, Any]:
    """A small shard set: num_shards x per_shard samples, sensors taken in turn.

    Each sample is a synthetic reflectance tile with about `invalid_fraction` invalid pixels;
    absorption bands are flagged in band_valid. `labels=K` adds meta["label"] in [0, K).
    `descriptors(i)` gives sample i's descriptors (default: landcover and climate_zone cycling
    over 3 and 2 values), e.g. to build a skewed set for curation tests.
    Returns the manifest (also written to out_dir/manifest.json).
    """
    rng = np.random.default_rng(seed)
    info = {"tile": tile, "dtype": dtype, "generator": "tests.fixtures.write_tiny_shards"}
    with ShardWriter(out_dir, shard_size=per_shard, overwrite=overwrite, info=info) as writer:
        for i in range(num_shards * per_shard):
            name = sensors[i % len(sensors)]
            wl, fwhm, _ = sensor_bands(name, max_bands)
            cube = synthetic_cube(wl, tile, tile, seed=seed * 1000 + i)
            valid = rng.random((tile, tile)) >= invalid_fraction
            key = make_key(f"tiny-{name}", row=i * tile, col=0)
            described = descriptors(i) if descriptors else {
                "landcover": ["water", "vegetation", "bare"][i % 3],
                "climate_zone": ["temperate", "tropical"][i % 2]}
            meta = {"key": key, "scene": f"tiny-{name}", "crs": UTM_11N,
                    "transform": [2.0, 0.0, ORIGIN[0], 0.0, -2.0, ORIGIN[1] - 2.0 * i * tile],
                    "descriptors": described}
            if labels:
                meta["label"] = int(i % labels)
            sample = make_sample(cube, wl, fwhm, valid=valid, gsd=2.0, sensor=name,
                                 level="L2", meta=meta)
            band_valid = ~absorption_mask(wl, get_sensor(name).absorption_ranges)
            writer.add(key, encode_sample(sample, dtype=dtype, band_valid=band_valid),
                       row={"sensor": name, "bands": len(wl), "descriptors": described})
    return writer.manifest


def corrupt_shard(path, mode: str = "truncate", member: int = 0) -> Path:
    """Damage a shard in place: "truncate" cuts the tar mid-way (a broken download);
    "garble" replaces the payload of member number `member` with bytes that are not npy/json."""
    path = Path(path)
    data = path.read_bytes()
    if mode == "truncate":
        path.write_bytes(data[: len(data) // 2 + 100])
        return path
    if mode != "garble":
        raise ValueError(f"corrupt_shard: mode must be 'truncate' or 'garble', got {mode!r}")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i, (info, payload) in enumerate(members):
            if i == member:
                payload = b"\x00not a valid member\xff" * 4
                info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def _tar_entries(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path) as tar:
        return [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]


def edit_shard(path, edit: Callable[[int, str, bytes], bytes | None]) -> Path:
    """Rewrite shard `path` in place, member by member: `edit(i, ext, payload)` returns the new
    payload of sample i's member `ext` ("npy", "json"), or None to keep it."""
    path = Path(path)
    entries, keys = _tar_entries(path), []
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for info, payload in entries:
            key, _, ext = info.name.partition(".")
            if key not in keys:
                keys.append(key)
            new = edit(len(keys) - 1, ext, payload)
            if new is not None:
                payload, info.size = new, len(new)
            tar.addfile(info, io.BytesIO(payload))
    return path


def edit_shard_headers(path, edit: Callable[[int, dict[str, Any]], Any]) -> Path:
    """Rewrite sample i's JSON header of shard `path` as `edit(i, header)` (a dict, or raw
    bytes for a header that is not JSON; None keeps it). For crafting bad metadata: NaN gsd,
    null wavelength, list-valued meta, ..."""
    def on_member(i: int, ext: str, payload: bytes) -> bytes | None:
        if ext != "json":
            return None
        new = edit(i, json.loads(payload))
        return new if new is None or isinstance(new, bytes) else json.dumps(new).encode()
    return edit_shard(path, on_member)


def npy_bytes(array: np.ndarray) -> bytes:
    """`array` as the bytes of a .npy member."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def truncate_shard(path, keep: int) -> Path:
    """Cut shard `path` in the middle of sample number `keep`'s first member (a download that
    broke off): exactly `keep` samples stay readable, the rest of the shard is lost."""
    path = Path(path)
    with tarfile.open(path) as tar:
        firsts, seen = [], set()
        for info in tar.getmembers():
            key = info.name.partition(".")[0]
            if key not in seen:
                seen.add(key)
                firsts.append(info)
    if not 0 <= keep < len(firsts):
        raise ValueError(f"truncate_shard: keep={keep} but {path} holds {len(firsts)} samples")
    cut = firsts[keep].offset_data + max(firsts[keep].size // 2, 1)
    path.write_bytes(path.read_bytes()[:cut])
def write_tiny_federation(out_dir, *, sensors: Sequence[str] = ("sentinel-2a", "landsat-8"),
                          tiles_per_class: int = 6, tile: int = 16, seed: int = 0,
                          overrides: dict | None = None) -> Path:
    """A `specaware federated` run folder without the synth step: per client (one per sensor)
    `data/client-<i>.npz` of 3-class tiles (each dominated by the water, vegetation or soil
    spectrum, through the sensor's bands), `data/partition.json` and `federated_config.json`
    (debug encoder, 1 round, prompt_dual unless `overrides` say otherwise). Returns the config
    path."""
    import json

    from specaware.config import merge, to_dict
    from specaware.federated.config import ClientSpec, FederatedConfig
    from specaware.federated.data import SPLITS, ClientData
    out = Path(out_dir)
    (out / "data").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = ["water", "vegetation", "soil"]
    split = np.tile(np.r_[np.zeros(tiles_per_class - 3), 1, 2, 2].astype(np.uint8), 3)
    label = np.repeat(np.arange(3), tiles_per_class)
    clients = []
    for i, sensor in enumerate(sensors):
        s = get_sensor(sensor)
        ends = _endmembers(s.wavelength)                                  # [3, C]
        mix = rng.dirichlet(np.ones(3) * 0.5, size=(len(label), tile, tile))  # [N, t, t, 3]
        mix = 0.3 * mix + 0.7 * np.eye(3)[label][:, None, None, :]
        image = np.einsum("nhwk,kc->nchw", mix, ends) + rng.normal(0, 0.003, (len(label),
                                                                             s.num_bands, tile,
                                                                             tile))
        ClientData(f"{i}-{s.name}", image.astype(np.float32),
                   np.ones(image.shape, bool), label.copy(), split.copy(), s.wavelength,
                   s.fwhm, 10.0, s.name, names).save(out / "data" / f"client-{i}.npz")
        clients.append({"name": f"{i}-{s.name}", "sensor": s.name,
                        **{k: np.bincount(label[split == v], minlength=3).tolist()
                           for k, v in SPLITS.items()}})
    (out / "data" / "partition.json").write_text(json.dumps({"classes": names,
                                                             "clients": clients}))
    cfg = FederatedConfig(out=str(out), clients=[ClientSpec(s) for s in sensors],
                          strategies=["prompt_dual"])
    cfg = merge(merge(cfg, {"train": {"rounds": 1, "batch_size": 8}}), overrides or {})
    path = out / "federated_config.json"
    path.write_text(json.dumps(to_dict(cfg)))
    return path


def one_device():
    """Context manager that fails every torch op whose tensor arguments live on different
    devices, as CUDA kernels do. Run a model on the `meta` device under it to find, without a
    GPU, a helper tensor created on the default device: some meta kernels (embedding, scatter,
    gather) accept a CPU operand silently. 0-dim CPU tensors pass, as torch treats them as
    scalars on any device."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class OneDevice(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            flat, _ = tree_flatten((args, kwargs))
            devices = {str(t.device) for t in flat if isinstance(t, torch.Tensor)
                       and not (t.device.type == "cpu" and t.dim() == 0)}
            if len(devices) > 1:
                raise RuntimeError(f"{func}: operands on {sorted(devices)}; create every "
                                   "tensor on the input's device")
            return func(*args, **kwargs)

    return OneDevice()
