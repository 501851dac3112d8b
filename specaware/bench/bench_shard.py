"""Scene ingestion throughput: window-wise tile reads and the full `specaware shard` pipeline
versus reading the whole scene into memory and slicing it (the fastest possible, and what a
scene larger than memory cannot do).

Writes one AVIRIS-Classic-like scene (224 bands, float32) as ENVI BSQ and as a tiled GeoTIFF,
then measures side by side in one run, in tiles/s of 128x128:
- whole:  `src.read()` of the entire scene, then numpy slicing into tiles (baseline);
- strips: `iter_tiles` (one read per row of tiles, memory ~ bands x tile x width);
- tiles:  one window read per tile (the fallback for very wide scenes);
- shard:  `shard_scenes` end to end (marking, descriptors, float16 encoding, tar writing).
Prints each rate and its ratio to the whole-scene read. Run:

    PYTHONPATH=. .venv/bin/python bench/bench_shard.py [--quick]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the folder holding specaware/

from specaware.data import raster  # noqa: E402
from specaware.data.raster import iter_tiles, open_scene, tile_origins  # noqa: E402
from specaware.data.shard import shard_scenes  # noqa: E402
from specaware.data.tiling import TilingOptions  # noqa: E402
from specaware.testing import sensor_bands, synthetic_cube, write_envi, write_geotiff  # noqa: E402

TILE = 128


def _timed(fn) -> tuple[float, int]:
    start = time.perf_counter()
    count = fn()
    return time.perf_counter() - start, count


def whole_read(path: Path) -> int:
    with rasterio.open(path) as src:
        cube = src.read()
    rows, cols = tile_origins(cube.shape[1], TILE, TILE), tile_origins(cube.shape[2], TILE, TILE)
    tiles = [np.ascontiguousarray(cube[:, r:r + TILE, c:c + TILE]) for r in rows for c in cols]
    return len(tiles)


def strip_read(path: Path) -> int:
    return sum(1 for _ in iter_tiles(open_scene(path), TILE))


def tile_read(path: Path) -> int:
    saved, raster.MAX_STRIP_BYTES = raster.MAX_STRIP_BYTES, 0
    try:
        return strip_read(path)
    finally:
        raster.MAX_STRIP_BYTES = saved


def shard(path: Path, out: Path) -> int:
    manifest = shard_scenes([path], out, options=TilingOptions(tile=TILE, max_invalid=1.0),
                            progress=False, overwrite=True)
    return manifest["report"]["tiles_seen"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller scene (smoke run)")
    args = parser.parse_args(argv)
    size, bands = (256, 64) if args.quick else (512, 224)
    wl, fwhm, _ = sensor_bands("aviris-classic", bands)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cube = synthetic_cube(wl, size, size, seed=0)
        files = {"envi-bsq": write_envi(tmp / "scene.img", cube, wavelength=wl, fwhm=fwhm),
                 "geotiff": write_geotiff(tmp / "scene.tif", cube, wavelength=wl, fwhm=fwhm,
                                          blocksize=256)}
        del cube
        print(f"scene {bands} bands x {size} x {size} float32 "
              f"({bands * size * size * 4 / 2**20:.0f} MiB), tiles {TILE}x{TILE}")
        for name, path in files.items():
            whole_read(path)  # warm the page cache so every variant reads from memory
            base_s, n = _timed(lambda: whole_read(path))
            base = n / base_s
            print(f"{name}: whole-scene read {base:8.1f} tiles/s (baseline, {n} tiles)")
            for label, fn in [("strip reads", lambda: strip_read(path)),
                              ("tile reads", lambda: tile_read(path)),
                              ("shard (float16)", lambda: shard(path, tmp / f"out-{name}"))]:
                secs, n = _timed(fn)
                print(f"{name}: {label:<16}{n / secs:8.1f} tiles/s  "
                      f"ratio {n / secs / base:.2f} of whole read")
    return 0


if __name__ == "__main__":
    sys.exit(main())
