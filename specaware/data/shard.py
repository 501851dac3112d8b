"""Webdataset shard writing and the dataset manifest (docs/DESIGN.md section 1, INTERFACES "Shards").

Layout of a shard set:
    DIR/shard-000000.tar ...   tar files; per sample `KEY.npy` + `KEY.json` (see codec.py)
    DIR/manifest.json          shards with counts, totals, per-sensor counts and band counts,
                               bounds (EPSG:4326), tiling report, one row per tile

Shards are written to `*.tar.tmp` and renamed when complete, and the manifest is written last:
a crashed run leaves no manifest, so a half-written set is never mistaken for a finished one.
Writing into a folder that already holds a shard set refuses unless `overwrite=True`, which
removes the old shards and manifest first (and only those files).
"""
from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path
from typing import Any

from specaware.data.codec import make_key  # noqa: F401 - part of this module's API

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "specaware-shards/1"
SHARD_PATTERN = "shard-{:06d}.tar"


class ShardSetExistsError(FileExistsError):
    """The output folder already holds a shard set and overwrite was not asked for."""


def existing_shard_set(out_dir: Path) -> list[Path]:
    """Files of a previous shard set in `out_dir` (manifest, shards, leftover temporaries)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = sorted(out_dir.glob("shard-*.tar")) + sorted(out_dir.glob("shard-*.tar.tmp"))
    if (out_dir / MANIFEST).exists():
        found.append(out_dir / MANIFEST)
    return found


def prepare_output(out_dir: Path, overwrite: bool) -> Path:
    """Create `out_dir`, refusing (or with overwrite, clearing) a previous shard set."""
    out_dir = Path(out_dir)
    old = existing_shard_set(out_dir)
    if old and not overwrite:
        raise ShardSetExistsError(
            f"{out_dir} already holds a shard set ({len(old)} files, e.g. {old[0].name}); "
            f"pass --overwrite to replace it, or choose another --out")
    for path in old:
        path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


class ShardWriter:
    """Rolls samples into tar shards of `shard_size` samples and records manifest rows.

        with ShardWriter(out_dir, shard_size=256) as writer:
            writer.add(key, {"npy": b"...", "json": b"..."}, row={"sensor": ..., ...})
        manifest = writer.manifest   # also written to out_dir/manifest.json

    Member mtimes are fixed, so the same input always gives byte-identical shards.
    """

    def __init__(self, out_dir, shard_size: int = 256, overwrite: bool = False,
                 info: dict[str, Any] | None = None):
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.out_dir = prepare_output(Path(out_dir), overwrite)
        self.shard_size = shard_size
        self.info = dict(info or {})
        self.shards: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []
        self.manifest: dict[str, Any] | None = None
        self._tar: tarfile.TarFile | None = None
        self._keys: set[str] = set()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()

    def _tmp_path(self) -> Path:
        return self.out_dir / (SHARD_PATTERN.format(len(self.shards) - 1) + ".tmp")

    def _roll(self) -> None:
        self._finish_shard()
        self.shards.append({"name": SHARD_PATTERN.format(len(self.shards)), "count": 0})
        self._tar = tarfile.open(self._tmp_path(), "w", format=tarfile.USTAR_FORMAT)

    def _finish_shard(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        self._tar = None
        tmp = self._tmp_path()
        os.replace(tmp, tmp.with_suffix(""))

    def add(self, key: str, members: dict[str, bytes], row: dict[str, Any] | None = None) -> None:
        """Write one sample (`members` maps extension -> bytes) and its manifest row."""
        if key in self._keys:
            raise ValueError(f"duplicate sample key '{key}' in {self.out_dir}")
        if "." in key:
            raise ValueError(f"sample key '{key}' contains a dot; use make_key()")
        self._keys.add(key)
        if self._tar is None or self.shards[-1]["count"] >= self.shard_size:
            self._roll()
        for ext, payload in sorted(members.items()):
            entry = tarfile.TarInfo(f"{key}.{ext}")
            entry.size, entry.mtime, entry.mode = len(payload), 0, 0o644
            self._tar.addfile(entry, io.BytesIO(payload))
        self.shards[-1]["count"] += 1
        self.rows.append({"key": key, "shard": self.shards[-1]["name"], **(row or {})})

    def close(self) -> dict[str, Any]:
        """Finish the last shard and write the manifest; returns the manifest dict."""
        self._finish_shard()
        self.manifest = build_manifest(self.shards, self.rows, self.info)
        write_json_atomic(self.out_dir / MANIFEST, self.manifest)
        return self.manifest

    def _abort(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None
            self._tmp_path().unlink(missing_ok=True)


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def _union_bounds(rows: list[dict[str, Any]]) -> list[float] | None:
    """[W, S, E, N] (degrees) holding every tile's box. Longitudes are taken on the circle:
    a box with west > east crosses the antimeridian, and the union is everything but the widest
    longitude gap no box covers, so tiles on both sides of 180 degrees give a box that crosses
    it (west > east, as the tiles' own boxes and GeoJSON do), not one round the globe."""
    boxes = [r["bounds"] for r in rows if r.get("bounds")]
    if not boxes:
        return None
    west, east = _longitude_union([(b[0], b[2]) for b in boxes])
    return [west, min(b[1] for b in boxes), east, max(b[3] for b in boxes)]


def _longitude_union(spans: list[tuple[float, float]]) -> tuple[float, float]:
    """(west, east) of the shortest arc covering every (west, east) span (west > east: the
    span crosses the antimeridian); (-180, 180) when the spans leave no gap."""
    arcs = sorted((w, e if e >= w else e + 360.0) for w, e in spans)
    merged: list[list[float]] = []
    for start, end in arcs:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    gaps = [(merged[(i + 1) % len(merged)][0] + (360.0 if i == len(merged) - 1 else 0.0)
             - merged[i][1], i) for i in range(len(merged))]
    width, i = max(gaps)
    if width <= 0:
        return -180.0, 180.0
    west, east = merged[(i + 1) % len(merged)][0], merged[i][1]
    return (round(west, 7), round((east + 180.0) % 360.0 - 180.0 if east > 180.0 else east, 7))


def build_manifest(shards, rows, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Manifest dict from the shard list and the per-tile rows (each with key, shard, sensor,
    bands, descriptors and optionally bounds [W, S, E, N] in EPSG:4326)."""
    sensors: dict[str, dict[str, Any]] = {}
    band_counts: dict[str, int] = {}
    for row in rows:
        entry = sensors.setdefault(row.get("sensor", "unknown"), {"count": 0, "bands": []})
        entry["count"] += 1
        bands = row.get("bands")
        if bands is not None:
            if bands not in entry["bands"]:
                entry["bands"].append(bands)
            band_counts[str(bands)] = band_counts.get(str(bands), 0) + 1
    return {
        "format": MANIFEST_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "total": len(rows),
        "shards": [dict(s) for s in shards],
        "sensors": sensors,
        "band_counts": band_counts,
        "bounds": _union_bounds(rows),
        "bounds_crs": "EPSG:4326",
        **(info or {}),
        "tiles": rows,
    }


def read_manifest(shard_dir) -> dict[str, Any]:
    """Load DIR/manifest.json (DIR may be an s3:// or https:// prefix) with a clear error when
    it is missing or not a shard manifest."""
    from specaware.data import object_store
    if object_store.is_store_url(shard_dir):
        return object_store.read_manifest(shard_dir)
    path = Path(shard_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {shard_dir} is not a finished shard set "
                                f"(create one with `specaware shard SCENE... --out DIR`)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected "
                         f"{MANIFEST_FORMAT!r}")
    return manifest


# --- tiling scenes into a shard set -------------------------------------------------------

def _scene_tag_descriptors(scene) -> dict[str, Any]:
    """User descriptors from SPECAWARE_* dataset tags (SENSOR/LEVEL are settings, not
    descriptors); numeric strings become numbers."""
    out = {}
    for key, value in scene.tags.items():
        name = key[len("SPECAWARE_"):].lower()
        if name in ("sensor", "level"):
            continue
        try:
            out[name] = float(value) if "." in value or "e" in value.lower() else int(value)
        except ValueError:
            out[name] = value
    return out


def _user_descriptors(path, table: dict[str, dict]) -> dict[str, Any]:
    """Entries of a --descriptors table for this scene: "*" first, then by path (or URL),
    name, stem."""
    out = dict(table.get("*", {}))
    name = Path(str(path))
    for key in (str(path), name.name, name.stem):
        out.update(table.get(key, {}))
    return out


def plan_scenes(paths, *, options, descriptors: dict[str, dict] | None = None,
                subdataset: str | None = None, **scene_kwargs) -> list:
    """Open every scene's header (no pixels) and build its SceneJob; fails before any output
    is written if one scene's metadata cannot be resolved. Paths may be URLs, NetCDF/HDF5
    containers (`subdataset` picks a variable) or folders of band files (products.as_scene).
    scene_kwargs go to open_scene."""
    from specaware.data.products import as_scene
    from specaware.data.raster import open_scene
    from specaware.data.remote import is_remote
    from specaware.data.tiling import SceneJob

    jobs, seen = [], set()
    for path in (str(p) if is_remote(p) else Path(p) for p in paths):
        scene = open_scene(as_scene(path, subdataset), **scene_kwargs)
        scene_id, n = scene.name, 2
        while scene_id in seen:  # same file name in two folders
            scene_id, n = f"{scene.name}-{n}", n + 1
        seen.add(scene_id)
        user = _scene_tag_descriptors(scene) | _user_descriptors(path, descriptors or {})
        jobs.append(SceneJob(scene, scene_id, options, user))
    return jobs


def _work_units(jobs):
    from specaware.data.raster import tile_origins

    units = []
    for job in jobs:
        tile, stride = job.options.tile, job.options.stride or job.options.tile
        cols = tile_origins(job.scene.width, tile, stride)
        units += [(job, row, cols) for row in tile_origins(job.scene.height, tile, stride)]
    return units


def _run_unit(unit):
    """(tile results, network retries counted while reading them) of one strip."""
    from specaware.data.remote import take_retries
    from specaware.data.tiling import process_strip
    return process_strip(*unit), take_retries()


def _scene_report(job) -> dict[str, Any]:
    s = job.scene
    from specaware.data.remote import display_url
    return {"scene": job.scene_id, "path": display_url(s.path), "sensor": s.sensor,
            "level": s.level,
            "bands": s.num_bands, "wavelength_source": s.wavelength_source, "gsd": s.gsd,
            "crs": s.crs, "width": s.width, "height": s.height, "descriptors": job.descriptors,
            "tiles_seen": 0, "tiles_kept": 0, "dropped_invalid": 0,
            "too_small": s.width < job.options.tile or s.height < job.options.tile}


def shard_scenes(paths, out_dir, *, options=None, shard_size: int = 256, workers: int = 0,
                 overwrite: bool = False, descriptors: dict[str, dict] | None = None,
                 progress: bool = True, subdataset: str | None = None,
                 **scene_kwargs) -> dict[str, Any]:
    """Tile scenes into webdataset shards + manifest.json in `out_dir`; returns the manifest.

    options: TilingOptions (tile, stride, max_invalid, dtype, min_value, cap);
    workers: processes that read and encode strips (0 = in this process); output is identical
    for any worker count. scene_kwargs: sensor, level, gsd, scale, offset (see open_scene).
    """
    from specaware.data.remote import take_retries
    from specaware.data.tiling import TilingOptions

    options = options or TilingOptions()
    take_retries()
    jobs = plan_scenes(paths, options=options, descriptors=descriptors,
                       subdataset=subdataset, **scene_kwargs)
    retries = take_retries()
    reports = {job.scene_id: _scene_report(job) for job in jobs}
    info = {"tile": options.tile, "stride": options.stride or options.tile,
            "dtype": options.dtype, "max_invalid": options.max_invalid}
    units = _work_units(jobs)
    from specaware.data.object_store import RemoteShardWriter, is_store_url

    writer_type = RemoteShardWriter if is_store_url(str(out_dir)) else ShardWriter
    with writer_type(out_dir, shard_size=shard_size, overwrite=overwrite, info=info) as writer:
        for results, unit_retries in _map_units(units, workers, progress):
            retries.update(unit_retries)
            for result in results:
                report = reports[result.row["scene"]]
                report["tiles_seen"] += 1
                if result.key is None:
                    report["dropped_invalid"] += 1
                else:
                    report["tiles_kept"] += 1
                    writer.add(result.key, result.members, result.row)
        writer.info["report"] = _summary(list(reports.values()), retries)
    return writer.manifest


def _map_units(units, workers: int, progress: bool):
    from tqdm import tqdm

    bar = tqdm(total=len(units), unit="strip", desc="shard", disable=not progress)
    if workers <= 0:
        for unit in units:
            yield _run_unit(unit)
            bar.update()
    else:
        import multiprocessing as mp
        # spawn: GDAL handles must not be shared with forked children.
        with mp.get_context("spawn").Pool(workers) as pool:
            for results in pool.imap(_run_unit, units):
                yield results
                bar.update()
    bar.close()


def _summary(scenes: list[dict[str, Any]], retries=None) -> dict[str, Any]:
    """Tiling report; `retries` counts network retries per reason (remote scenes)."""
    return {"tiles_seen": sum(s["tiles_seen"] for s in scenes),
            "retries": dict(retries or {}),
            "tiles_kept": sum(s["tiles_kept"] for s in scenes),
            "dropped_invalid": sum(s["dropped_invalid"] for s in scenes),
            "scenes_too_small": [s["scene"] for s in scenes if s["too_small"]],
            "scenes": scenes}
