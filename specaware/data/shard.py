"""Webdataset shard writing and the dataset manifest (DESIGN.md section 1, INTERFACES "Shards").

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
import re
import tarfile
import time
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "specaware-shards/1"
SHARD_PATTERN = "shard-{:06d}.tar"
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


class ShardSetExistsError(FileExistsError):
    """The output folder already holds a shard set and overwrite was not asked for."""


def make_key(scene: str, row: int, col: int) -> str:
    """Sample key for the tile at pixel (row, col) of `scene`.

    webdataset splits member names at the first dot, so keys keep only [A-Za-z0-9_-].
    """
    stem = _KEY_UNSAFE.sub("-", scene).strip("-") or "scene"
    return f"{stem}_r{row:06d}_c{col:06d}"


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
    boxes = [r["bounds"] for r in rows if r.get("bounds")]
    if not boxes:
        return None
    return [min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes)]


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
    """Load DIR/manifest.json with a clear error when it is missing or not a shard manifest."""
    path = Path(shard_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {shard_dir} is not a finished shard set "
                                f"(create one with `specaware shard SCENE... --out DIR`)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected "
                         f"{MANIFEST_FORMAT!r}")
    return manifest
