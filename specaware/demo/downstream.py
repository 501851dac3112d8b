"""Labelled data and fine-tuning runs of the demo, built from `specaware synth`'s manifest.

One sensor (EnMAP by default) carries the three tasks. Its scenes are split by scene: all but
the last are fine-tuning data (tiles split into train/val/test by the task config), the last is
held out and predicted whole, to draw maps next to its ground truth.
- classification: the t1 images are cut into `tile` x `tile` tiles labelled with their
  dominant land-cover class (tiles below `purity` are left out), written as
  `tiles/<class>/<tile>.tif` (the TileFolder layout of `specaware finetune`);
- segmentation: image + land-cover mask GeoTIFF pairs (t1);
- change: t1, t2 and the binary change mask.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window, transform as window_transform

from specaware.naming import safe_name
from specaware.synth.write import read_labels, write_image

log = logging.getLogger(__name__)
TASKS = ("classification", "segmentation", "change")


@dataclass
class TaskData:
    """Paths for one sensor: fine-tuning scenes and the held-out scene (t1, t2, masks)."""
    sensor: str
    t1: list[Path]
    t2: list[Path]
    labels: list[Path]
    change: list[Path]
    held_out: dict[str, Path]
    class_names: list[str]


def select(synth_dir: Path, sensor: str) -> TaskData:
    """Pick the sensor's scenes from synth_manifest.json; the last scene is held out."""
    manifest = json.loads((synth_dir / "synth_manifest.json").read_text())
    pairs = [p for p in manifest["change_pairs"] if p["sensor"] == sensor]
    if len(pairs) < 2:
        raise ValueError(f"{synth_dir}: {len(pairs)} two-date scene(s) for sensor {sensor!r}; "
                         "the demo needs >= 2 (one is held out): raise --scenes")
    by_id = {s["id"]: s for s in manifest["scenes"]}
    rows = [(by_id[p["t1"]], by_id[p["t2"]], p) for p in pairs]
    path = lambda rel: synth_dir / rel  # noqa: E731
    *train, held = rows
    return TaskData(
        sensor=sensor, t1=[path(a["image"]) for a, _, _ in train],
        t2=[path(b["image"]) for _, b, _ in train],
        labels=[path(a["labels"]) for a, _, _ in train],
        change=[path(p["change"]) for _, _, p in train],
        held_out={"t1": path(held[0]["image"]), "t2": path(held[1]["image"]),
                  "labels": path(held[0]["labels"]), "change": path(held[2]["change"])},
        class_names=list(manifest["classes"]))


def tile_labels(labels: np.ndarray, tile: int, purity: float, ignore: int = 255):
    """Dominant class per tile: yields (row, col, class) for tiles whose dominant class covers
    at least `purity` of the tile and that hold no nodata."""
    h, w = labels.shape
    for r in range(0, h - tile + 1, tile):
        for c in range(0, w - tile + 1, tile):
            block = labels[r:r + tile, c:c + tile]
            if (block == ignore).any():
                continue
            counts = np.bincount(block.ravel())
            k = int(counts.argmax())
            if counts[k] >= purity * block.size:
                yield r, c, k


def write_class_tiles(data: TaskData, out: Path, tile: int, purity: float,
                      max_per_class: int) -> dict[str, int]:
    """Write `out/<class>/<scene>_<r>_<c>.tif` tiles from the t1 images; returns counts per
    class. (t2 tiles of unchanged ground would be near-copies of t1 tiles across the splits.)"""
    counts: dict[str, int] = {}
    for image in data.t1:
        labels_path = image.parent.parent / "labels" / f"{image.stem}_labels.tif"
        labels, names = read_labels(labels_path)
        with rasterio.open(image) as src:
            wl, fw, band_names = _band_table(src)
            for r, c, k in tile_labels(labels, tile, purity):
                name = safe_name(names[k])   # a folder per class: the name comes from data
                if counts.get(name, 0) >= max_per_class:
                    continue
                win = Window(c, r, tile, tile)
                write_image(out / name / f"{image.stem}_{r:04d}_{c:04d}.tif",
                            src.read(window=win), wavelength=wl, fwhm=fw, band_names=band_names,
                            crs=src.crs, transform=window_transform(win, src.transform),
                            tags={"sensor": data.sensor, "level": "L2", "label": name})
                counts[name] = counts.get(name, 0) + 1
    too_few = [n for n, v in counts.items() if v < 5]
    for name in too_few:  # a class with a handful of tiles cannot be split into train/val/test
        for p in (out / name).iterdir():
            p.unlink()
        (out / name).rmdir()
        log.info("classification tiles: left out class %s (%d tiles)", name, counts.pop(name))
    if len(counts) < 2:
        raise ValueError(f"{out}: {len(counts)} land-cover class(es) with >= 5 pure "
                         f"{tile} px tiles ({counts}); scene classification needs 2. Fix: more "
                         "or larger scenes (--scenes, --size), or a smaller class tile")
    return counts


def _band_table(src) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from specaware.data.band_metadata import band_table, resolve_sensor
    table = band_table(src, src.name, resolve_sensor(src, None))
    wl, fw = table.wavelength.astype(np.float32), table.fwhm.astype(np.float32)
    names = [(d or f"band {i + 1}").split(" (")[0] for i, d in enumerate(src.descriptions)]
    return wl, fw, names


def overrides(task: str, data: TaskData, tiles_dir: Path, class_tile: int) -> list[str]:
    """`key=value` overrides pointing the task config at the demo's data."""
    lst = lambda paths: "[" + ",".join(str(p) for p in paths) + "]"  # noqa: E731
    if task == "classification":
        return [f"data.root={tiles_dir}", f"protocol.tile={class_tile}"]
    if task == "segmentation":
        return [f"data.images={lst(data.t1)}", f"data.masks={lst(data.labels)}",
                f"data.num_classes={len(data.class_names)}"]
    return [f"data.images={lst(data.t1)}", f"data.images2={lst(data.t2)}",
            f"data.masks={lst(data.change)}"]
