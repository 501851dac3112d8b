"""Write synthetic scenes as GeoTIFF or ENVI with band metadata, and label maps as GeoTIFF.

Wavelength metadata, as readers look for it (docs/DESIGN.md section 1: nm inside the code,
converted at the edges):
- GeoTIFF: per band, tags `wavelength` / `fwhm` (nm) + `wavelength_units=nm`, GDAL's IMAGERY
  domain `CENTRAL_WAVELENGTH_UM` / `FWHM_UM` (micrometres), and a band description
  "B012 (552.4 nm)"; dataset tags `sensor`, `level`, `scene`, `date`.
- ENVI: header fields `wavelength`, `fwhm` (in nm), `wavelength units = Nanometers`,
  `sensor type`, `data ignore value`, `band names`, plus `map info` / `coordinate system string`
  from the CRS. The header alone carries everything (no .aux.xml is kept).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine

from specaware.synth.render import NODATA

#: Label colours (RGB) in CLASSES order, so a GIS shows the maps readably.
CLASS_COLOURS = ((30, 90, 200), (20, 110, 40), (140, 200, 90), (190, 170, 90),
                 (150, 100, 60), (170, 170, 170), (220, 50, 50), (40, 30, 30))


def _envi_list(values: np.ndarray) -> str:
    return "{" + ", ".join(f"{v:.4f}" for v in values) + "}"


def write_image(path: Path, image: np.ndarray, *, wavelength: np.ndarray, fwhm: np.ndarray,
                band_names: list[str], crs: CRS, transform: Affine, tags: dict[str, str],
                nodata: float = NODATA) -> Path:
    """Write image float32 [c, h, w] (reflectance) to `path`: ENVI if it ends in .img, else
    GeoTIFF. wavelength, fwhm: [c] nm. tags: dataset tags (sensor, level, scene, date...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = image.shape
    envi = path.suffix == ".img"
    profile = dict(driver="ENVI" if envi else "GTiff", width=width, height=height, count=count,
                   dtype="float32", crs=crs, transform=transform, nodata=nodata)
    if not envi:
        profile.update(interleave="band")
        if height >= 16 and width >= 16:
            profile.update(tiled=True, blockxsize=min(256, width // 16 * 16),
                           blockysize=min(256, height // 16 * 16))
    descriptions = [f"{n} ({w:.1f} nm)" for n, w in zip(band_names, wavelength)]
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image.astype(np.float32, copy=False))
        for b, text in enumerate(descriptions, start=1):
            dst.set_band_description(b, text)
        if envi:
            _envi_tags(dst, wavelength, fwhm, tags)
        else:
            _geotiff_tags(dst, wavelength, fwhm, tags)
    if envi:
        Path(str(path) + ".aux.xml").unlink(missing_ok=True)
    return path


def _geotiff_tags(dst, wavelength, fwhm, tags: dict[str, str]) -> None:
    dst.update_tags(wavelength_units="nm", **tags)
    for b, (wl, fw) in enumerate(zip(wavelength, fwhm), start=1):
        dst.update_tags(b, wavelength=f"{wl:.4f}", fwhm=f"{fw:.4f}", wavelength_units="nm")
        dst.update_tags(b, ns="IMAGERY", CENTRAL_WAVELENGTH_UM=f"{wl / 1000:.6f}",
                        FWHM_UM=f"{fw / 1000:.6f}")


def _envi_tags(dst, wavelength, fwhm, tags: dict[str, str]) -> None:
    extra = {k.replace(" ", "_"): str(v) for k, v in tags.items() if k != "sensor"}
    dst.update_tags(ns="ENVI", wavelength=_envi_list(wavelength), fwhm=_envi_list(fwhm),
                    wavelength_units="Nanometers", sensor_type=tags.get("sensor", "unknown"),
                    **extra)


def write_labels(path: Path, labels: np.ndarray, *, crs: CRS, transform: Affine,
                 names: list[str], tags: dict[str, str] | None = None,
                 nodata: int = 255) -> Path:
    """Write a uint8 label map [h, w] as GeoTIFF; `names[i]` is the name of value i.

    The names go in the dataset tag `classes` (JSON list) so the file explains itself.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = labels.shape
    profile = dict(driver="GTiff", width=width, height=height, count=1, dtype="uint8", crs=crs,
                   transform=transform, nodata=nodata, compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        if len(names) <= len(CLASS_COLOURS):  # a palette must be set before the pixels
            dst.write_colormap(1, {i: (*CLASS_COLOURS[i], 255) for i in range(len(names))})
        dst.write(labels.astype(np.uint8), 1)
        dst.update_tags(classes=json.dumps(list(names)), ignore_value=str(nodata),
                        **(tags or {}))
    return path


def read_labels(path: Path) -> tuple[np.ndarray, list[str]]:
    """A label map uint8 [h, w] and its class names, as written by `write_labels`."""
    with rasterio.open(path) as src:
        tags = src.tags()
        if "classes" not in tags:
            raise ValueError(f"{path}: no `classes` tag; was it written by `specaware synth`?")
        return src.read(1), json.loads(tags["classes"])
