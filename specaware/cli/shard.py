"""`specaware shard SCENE... --out DIR`: tile scenes into webdataset shards + manifest.json.

Re-running into a folder that already holds a shard set refuses with a clear message; pass
--overwrite to replace it. Output bytes do not depend on --workers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from specaware.data.codec import DTYPES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenes", nargs="*", metavar="SCENE",
                        help="GDAL-readable scenes (GeoTIFF/COG, ENVI data file with .hdr, ...): "
                        "local paths, http(s):// URLs, s3:// URIs or GDAL /vsicurl/, /vsis3/ "
                        "paths (read window by window; credentials from the AWS_* variables "
                        "or AWS_PROFILE)")
    parser.add_argument("--out", required=True, help="output folder for shards + manifest, "
                        "or an s3://bucket/prefix/ to upload to (shards as they finish, the "
                        "manifest last)")
    parser.add_argument("--subdataset", help="NetCDF/HDF5 variable to read when a product "
                        "holds several (the error lists them)")
    parser.add_argument("--ortho", action="store_true",
                        help="read EMIT swath files through their geometric lookup table (GLT) "
                        "onto its map grid, so tiles carry a CRS (each grid pixel is the swath "
                        "pixel the GLT names); PRISMA L2D is map-projected anyway")
    stac = parser.add_argument_group("STAC (instead of SCENE arguments)")
    stac.add_argument("--stac", metavar="CATALOG_OR_API", help="STAC catalogue (catalog.json, "
                      "collection.json) or API root URL whose items to shard")
    stac.add_argument("--collection", action="append", default=[],
                      help="collection id (repeatable)")
    stac.add_argument("--bbox", help="W,S,E,N in degrees (write --bbox=-117,33,-116,34 when "
                      "the first value is negative)")
    stac.add_argument("--datetime", help="RFC 3339 instant or interval START/END")
    stac.add_argument("--max-items", type=int, help="shard at most this many items")
    stac.add_argument("--stac-asset", metavar="KEY", action="append", default=[],
                      help="for items without eo:bands: the asset (a NetCDF/HDF5 product such "
                      "as an EMIT or PRISMA file) to shard, when an item has several "
                      "(repeatable)")
    stac.add_argument("--stac-sign", metavar="SIGNER_URL",
                      default=os.environ.get("SPECAWARE_STAC_SIGN") or None,
                      help="sign each asset href through this URL signer (?href=URL -> "
                      "{\"href\": signed URL}), e.g. Planetary Computer's "
                      "https://planetarycomputer.microsoft.com/api/sas/v1/sign "
                      "(default: $SPECAWARE_STAC_SIGN)")
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
    retries = report.get("retries") or {}
    if retries:
        print(f"network: {sum(retries.values())} request(s) retried with backoff "
              f"({', '.join(f'{k}: {v}' for k, v in sorted(retries.items()))})")
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


def _ortho(scene: str) -> str:
    """EMIT-ORTHO:<scene> for an EMIT file (data/h5_cubes.py); other scenes unchanged."""
    from specaware.data.h5_cubes import cube_name
    from specaware.data.raster import may_hold_cube

    if not may_hold_cube(scene):
        return scene
    return cube_name(scene, ortho=True) or scene


def _stac_scenes(args: argparse.Namespace) -> tuple[list[str], dict]:
    """(scene VRT paths, descriptors table with each item's provenance) from --stac."""
    from specaware.data.stac import StacQuery, item_scene, parse_bbox, search

    query = StacQuery(args.collection, parse_bbox(args.bbox) if args.bbox else None,
                      args.datetime, args.max_items)
    items = search(args.stac, query)
    if not items:
        raise ValueError(f"--stac {args.stac}: no item matches collection={args.collection} "
                         f"bbox={args.bbox} datetime={args.datetime}")
    scenes, table = [], {}
    for item, href in items:
        scene, provenance = item_scene(item, href, signer=args.stac_sign,
                                       assets=args.stac_asset or None)
        scene = _ortho(str(scene)) if args.ortho and isinstance(scene, str) else str(scene)
        scenes.append(scene)
        table[scene] = provenance
    print(f"stac: {len(items)} item(s) from {args.stac}")
    return scenes, table


def main(args: argparse.Namespace) -> int:
    from specaware.data.raster import RasterMetadataError
    from specaware.data.remote import RemoteReadError, is_remote
    from specaware.data.shard import ShardSetExistsError, shard_scenes
    from specaware.data.tiling import TilingOptions
    from specaware.sensors import UnknownSensorError

    from specaware.data.stac import StacError

    if bool(args.scenes) == bool(args.stac):
        print("specaware shard: give SCENE paths/URLs or --stac CATALOG_OR_API (one of them)",
              file=sys.stderr)
        return 2
    missing = [s for s in args.scenes if not is_remote(s) and not Path(s).exists()]
    if missing:
        print(f"specaware shard: scene not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        descriptors = _load_descriptors(args.descriptors)
        scenes = [_ortho(s) for s in args.scenes] if args.ortho else args.scenes
        if args.stac:
            scenes, provenance = _stac_scenes(args)
            descriptors = {**provenance, **descriptors}
        options = TilingOptions(tile=args.tile, stride=args.stride, max_invalid=args.max_invalid,
                                dtype=args.dtype, min_value=args.min_value, cap=args.cap)
        manifest = shard_scenes(
            scenes, args.out, options=options, shard_size=args.shard_size,
            workers=args.workers, overwrite=args.overwrite, subdataset=args.subdataset,
            descriptors=descriptors, progress=not args.quiet,
            sensor=args.sensor, level=args.level, gsd=args.gsd, scale=args.scale,
            offset=args.offset)
    except (RasterMetadataError, RemoteReadError, ShardSetExistsError, UnknownSensorError,
            StacError, ValueError) as err:
        print(f"specaware shard: {err}", file=sys.stderr)
        return 2
    _print_report(manifest, args.out)
    if not manifest["total"]:
        print(f"specaware shard: wrote no tile to {args.out}: every scene was smaller than one "
              f"tile or every tile was above --max-invalid {args.max_invalid:.0%} invalid (see "
              f"the warnings above for each scene)", file=sys.stderr)
        return 1
    return 0
