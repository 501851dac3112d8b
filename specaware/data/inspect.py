"""`specaware inspect DIR`: summarise a shard set.

Prints counts per sensor and band count, shard sizes (checked against the tar contents),
the tiling report, descriptor strata, and, from a decoded sample of tiles, the invalid
fraction and value range, plus a few sample keys. Broken members are counted, not fatal.
"""
from __future__ import annotations

import argparse
import json
import sys
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from specaware.data.codec import SampleDecodeError, decode_sample

STRATA_KEYS = ("landcover", "climate_zone")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="shard folder (with manifest.json)")
    parser.add_argument("--samples", type=int, default=64,
                        help="tiles to decode for invalid fraction / value range (64; 0 = all)")
    parser.add_argument("--keys", type=int, default=5, help="sample keys to list (5)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    group = parser.add_argument_group("curation preview (see specaware/data/curate.py)")
    group.add_argument("--balance", default="",
                       help="comma-separated descriptors to balance over, e.g. "
                            "landcover,climate_zone,sensor ('name:N' bins a numeric one)")
    group.add_argument("--min-entropy", type=float, default=None,
                       help="remove tiles below this entropy (bits)")
    group.add_argument("--drop-quantile", type=float, default=None,
                       help="remove this fraction of tiles with the lowest entropy")
    group.add_argument("--max-oversample", type=float, default=10.0,
                       help="cap on how much more often a small stratum is drawn (10)")


def _tar_members(path: Path) -> tuple[dict[str, dict[str, bytes]] | None, str | None]:
    """{key: {ext: payload}} of a shard, or (None, error) when it cannot be read."""
    samples: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = member.name.partition(".")
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as err:
        return None, f"{path.name}: {err}"
    return samples, None


def _decode_stats(samples: list[dict[str, bytes]], limit: int) -> dict[str, Any]:
    """Invalid fraction over the signal bands (band_valid True), share of flagged bands and
    value range of up to `limit` decoded samples."""
    invalid, flagged, low, high, broken = [], [], np.inf, -np.inf, []
    for members in samples[:limit or None]:
        try:
            header = json.loads(members.get("json", b"{}"))
            s = decode_sample(members.get("npy", b""), header)
        except (SampleDecodeError, ValueError) as err:
            broken.append(str(err))
            continue
        band_valid = np.asarray(header["band_valid"], dtype=bool)
        signal = s["valid"][band_valid]
        invalid.append(1.0 - float(signal.mean()) if signal.size else 1.0)
        flagged.append(1.0 - float(band_valid.mean()))
        if s["valid"].any():
            values = s["image"][s["valid"]]
            low, high = min(low, float(values.min())), max(high, float(values.max()))
    return {"decoded": len(invalid), "broken": broken,
            "invalid_fraction_mean": float(np.mean(invalid)) if invalid else None,
            "flagged_band_fraction_mean": float(np.mean(flagged)) if flagged else None,
            "value_range": [low, high] if invalid and np.isfinite(low) else None}


def summarise(shard_dir, samples: int = 64, keys: int = 5) -> dict[str, Any]:
    """Summary dict of the shard set in `shard_dir` (see the module docstring)."""
    from specaware.data.shard import read_manifest

    shard_dir = Path(shard_dir)
    manifest = read_manifest(shard_dir)
    shards, errors, decoded_pool = [], [], []
    for entry in manifest["shards"]:
        members, error = _tar_members(shard_dir / entry["name"])
        if error:
            errors.append(error)
        found = None if members is None else len(members)
        shards.append({"name": entry["name"], "count": entry["count"], "found": found})
        decoded_pool += list((members or {}).values())
    tiles = manifest.get("tiles", [])
    strata = {k: dict(Counter(str(t.get("descriptors", {}).get(k)) for t in tiles))
              for k in STRATA_KEYS if any(k in t.get("descriptors", {}) for t in tiles)}
    return {
        "dir": str(shard_dir), "total": manifest["total"], "sensors": manifest["sensors"],
        "band_counts": manifest["band_counts"], "bounds": manifest.get("bounds"),
        "tile": manifest.get("tile"), "dtype": manifest.get("dtype"),
        "report": {k: v for k, v in manifest.get("report", {}).items() if k != "scenes"},
        "shards": shards, "shard_errors": errors,
        "mismatched_shards": [s["name"] for s in shards
                              if s["found"] is not None and s["found"] != s["count"]],
        "strata": strata, "keys": [t["key"] for t in tiles[:keys]],
        "decoded": _decode_stats(decoded_pool, samples),
    }


def _print_summary(s: dict[str, Any]) -> None:
    print(f"{s['dir']}: {s['total']} tiles in {len(s['shards'])} shards "
          f"(tile {s['tile']}, {s['dtype']})")
    for name, entry in sorted(s["sensors"].items()):
        print(f"  {name:<16}{entry['count']:>8} tiles  bands {entry['bands']}")
    if s["report"]:
        r = s["report"]
        print(f"tiling: kept {r.get('tiles_kept')} of {r.get('tiles_seen')}, dropped "
              f"{r.get('dropped_invalid')} above the invalid limit")
    if s["bounds"]:
        print("bounds (lon/lat): " + ", ".join(f"{v:.5f}" for v in s["bounds"]))
    for key, counts in s["strata"].items():
        print(f"{key}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    d = s["decoded"]
    if d["decoded"]:
        lo, hi = d["value_range"] or (float("nan"), float("nan"))
        print(f"decoded {d['decoded']} tiles: invalid fraction {d['invalid_fraction_mean']:.3f} "
              f"of signal bands, {d['flagged_band_fraction_mean']:.1%} of bands flagged "
              f"(absorption), values {lo:.4g}..{hi:.4g}")
    print("sample keys: " + ", ".join(s["keys"]))


def _problems(s: dict[str, Any]) -> list[str]:
    out = list(s["shard_errors"])
    out += [f"{n}: manifest count differs from the tar contents"
            for n in s["mismatched_shards"]]
    out += s["decoded"]["broken"]
    return out


def _curation(args: argparse.Namespace) -> dict[str, Any] | None:
    """Curation report for the --balance/--min-entropy/--drop-quantile options, or None."""
    balance = [b.strip() for b in (getattr(args, "balance", "") or "").split(",") if b.strip()]
    min_entropy = getattr(args, "min_entropy", None)
    drop_quantile = getattr(args, "drop_quantile", None)
    if not balance and min_entropy is None and not drop_quantile:
        return None
    from specaware.data.curate import curate
    from specaware.data.shard import read_manifest

    return curate(read_manifest(args.dir)["tiles"], balance, min_entropy, drop_quantile,
                  getattr(args, "max_oversample", 10.0)).report


def main(args: argparse.Namespace) -> int:
    try:
        summary = summarise(args.dir, samples=args.samples, keys=args.keys)
        curation = _curation(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"specaware inspect: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary if curation is None else {**summary, "curation": curation},
                         indent=1))
    else:
        _print_summary(summary)
        if curation is not None:
            from specaware.data.curate import format_report
            print("\n".join(format_report(curation)))
    problems = _problems(summary)
    for line in problems:
        print(f"problem: {line}", file=sys.stderr)
    return 1 if problems else 0
