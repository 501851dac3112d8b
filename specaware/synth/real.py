"""The one real image that ships in a package: spyndex's Sentinel-2 10 m tile.

`spyndex/data/S2_10m.json` holds bands B02, B03, B04, B08 (blue, green, red, NIR), 300 x 300
pixels, as L2A surface reflectance scaled by 10000. It carries no coordinates, so it is written
with a nominal UTM grid (tag `georeferencing=nominal`); its pixels and wavelengths are real.
Band centres and widths come from the Sentinel-2A entry of the sensor catalogue.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from rasterio.crs import CRS
from rasterio.transform import from_origin

from specaware.sensors import get_sensor
from specaware.synth.spectra import package_dir
from specaware.synth.write import write_image

SPYNDEX_BANDS = ("B2", "B3", "B4", "B8")   # catalogue names of spyndex's B02, B03, B04, B08
SCALE = 1e-4                               # L2A digital number -> reflectance


def load_spyndex_sentinel2() -> np.ndarray:
    """The tile as reflectance float32 [4, 300, 300] (bands B02, B03, B04, B08)."""
    path = package_dir("spyndex") / "data" / "S2_10m.json"
    data = np.asarray(json.loads(path.read_text()), dtype=np.float32)
    if data.ndim != 3 or data.shape[0] != len(SPYNDEX_BANDS):
        raise ValueError(f"{path}: expected 4 bands x rows x cols, found shape {data.shape}; "
                         "the spyndex install may be a different version")
    return data * SCALE


def write_spyndex_sentinel2(folder: Path, root: Path) -> dict:
    """Write the tile as GeoTIFF under `folder`; returns its manifest entry (paths from root)."""
    s2 = get_sensor("sentinel-2a")
    index = [s2.band_names.index(b) for b in SPYNDEX_BANDS]
    image = load_spyndex_sentinel2()
    gsd = 10.0
    crs = CRS.from_epsg(32632)
    transform = from_origin(600000.0, 5000000.0, gsd, gsd)
    tags = dict(sensor=s2.name, level="L2", scene="spyndex_s2", date="unknown", gsd="10",
                generator="spyndex S2_10m.json (real Sentinel-2 L2A)",
                georeferencing="nominal")
    path = write_image(Path(folder) / "spyndex_sentinel-2_10m.tif", image,
                       wavelength=s2.wavelength[index], fwhm=s2.fwhm[index],
                       band_names=list(SPYNDEX_BANDS), crs=crs, transform=transform, tags=tags)
    return {"id": "spyndex_s2", "sensor": s2.name, "level": "L2", "gsd": gsd,
            "bands": list(SPYNDEX_BANDS), "image": path.relative_to(root).as_posix(),
            "crs": crs.to_string(), "transform": list(transform)[:6], "real": True}
