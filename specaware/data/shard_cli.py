"""`specaware shard SCENE... --out DIR`: tile scenes into webdataset shards + manifest.json.

Re-running into a folder that already holds a shard set refuses with a clear message; pass
--overwrite to replace it. Output bytes do not depend on --workers.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from specaware.data.codec import DTYPES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenes", nargs="+", metavar="SCENE",
                        help="GDAL-readable scenes (GeoTIFF/COG, ENVI data file with .hdr, ...)")
    parser.add_argument("--out", required=True, help="output folder for shards + manifest")
    parser.add_argument("--sensor", help="catalogue sensor (`specaware sensors`); used when a "
                        "file has no wavelengths, and for value caps / absorption ranges")
    parser.add_argument("--level", choices=["L1", "L2"],
                        help="L1 radiance or L2 reflectance (default: SPECAWARE_LEVEL tag, "
                        "else L2)")
    parser.add_argument("--tile", type=int, default=128, help="tile size in pixels (128)")
    parser.add_argument("--stride", type=int, help="step between tiles in pixels (= --tile)")
    parser.add_argument("--max-invalid", type=float, default=0.2,
                        help="drop tiles with a larger invalid fraction (0.2)")
    parser.add_argument("--dtype", choices=DTYPES, default="float16",
                        help="stored cube type: float16, or int16 with scale/offset")
    parser.add_argument("--shard-size", type=int, default=256, help="samples per tar (256)")
    parser.add_argument("--workers", type=int, default=0,
                        help="reader/encoder processes (0 = in this process)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing shard set in --out")
    parser.add_argument("--descriptors", type=Path,
                        help="JSON {scene name|path|'*': {descriptor: value}} added to tiles")
    parser.add_argument("--gsd", type=float, help="ground sampling distance in m (default: "
                        "from the georeferencing, else the sensor)")
    parser.add_argument("--scale", type=float, help="physical = raw * scale + offset "
                        "(overrides the file's; e.g. 0.0001 for integer reflectance)")
    parser.add_argument("--offset", type=float, help="see --scale")
    parser.add_argument("--min-value", type=float, default=0.0,
                        help="values below are invalid (0: negative values)")
    parser.add_argument("--cap", type=float,
                        help="values above are invalid (default: the sensor's cap for the level)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _load_descriptors(path: Path | None) -> dict:
    if path is None:
        return {}
    table = json.loads(Path(path).read_text())
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ValueError(f"{path}: expected a JSON object mapping scene names (or '*') to "
                         f"objects of descriptors, e.g. {{\"scene1\": {{\"region\": \"alps\"}}}}")
    return table


def _print_report(manifest: dict, out: str) -> None:
    report = manifest["report"]
    print(f"wrote {manifest['total']} tiles in {len(manifest['shards'])} shards to {out}")
    print(f"kept {report['tiles_kept']} of {report['tiles_seen']} tiles; dropped "
          f"{report['dropped_invalid']} above {manifest['max_invalid']:.0%} invalid")
    for s in report["scenes"]:
        print(f"  {s['scene']}: {s['sensor']} {s['level']} {s['bands']} bands "
              f"(wavelengths: {s['wavelength_source']}), gsd {s['gsd']:g} m, "
              f"kept {s['tiles_kept']}/{s['tiles_seen']}")
        if s["too_small"]:
            print(f"  warning: {s['scene']} ({s['width']}x{s['height']}) is smaller than one "
                  f"tile; use a smaller --tile", file=sys.stderr)
        elif s["tiles_seen"] and not s["tiles_kept"]:
            print(f"  warning: every tile of {s['scene']} was above the invalid limit: check "
                  f"--level (L1 radiance vs L2 reflectance), --scale (e.g. 0.0001 for integer "
                  f"reflectance) and the nodata value", file=sys.stderr)


def main(args: argparse.Namespace) -> int:
    from specaware.data.raster import RasterMetadataError
    from specaware.data.shard import ShardSetExistsError, shard_scenes
    from specaware.data.tiling import TilingOptions
    from specaware.sensors import UnknownSensorError

    missing = [s for s in args.scenes if not Path(s).exists()]
    if missing:
        print(f"specaware shard: scene not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        options = TilingOptions(tile=args.tile, stride=args.stride, max_invalid=args.max_invalid,
                                dtype=args.dtype, min_value=args.min_value, cap=args.cap)
        manifest = shard_scenes(
            args.scenes, args.out, options=options, shard_size=args.shard_size,
            workers=args.workers, overwrite=args.overwrite,
            descriptors=_load_descriptors(args.descriptors), progress=not args.quiet,
            sensor=args.sensor, level=args.level, gsd=args.gsd, scale=args.scale,
            offset=args.offset)
    except (RasterMetadataError, ShardSetExistsError, UnknownSensorError, ValueError) as err:
        print(f"specaware shard: {err}", file=sys.stderr)
        return 2
    _print_report(manifest, args.out)
    if not manifest["total"]:
        print(f"specaware shard: wrote no tile to {args.out}: every scene was smaller than one "
              f"tile or every tile was above --max-invalid {args.max_invalid:.0%} invalid (see "
              f"the warnings above for each scene)", file=sys.stderr)
        return 1
    return 0
