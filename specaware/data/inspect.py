"""`specaware inspect DIR`: summarise a shard set.

Prints counts per sensor and band count, shard sizes (checked against the tar contents),
the tiling report, descriptor strata, and, from a decoded sample of tiles, the invalid
fraction and value range, plus a few sample keys. Problems (exit code 1) are what training
would skip or choke on: unreadable or short shards, samples that do not decode, bad band
metadata (NaN gsd/FWHM, gsd <= 0, implausible or repeated wavelengths, 0 bands), off-size tiles,
NaN/inf pixels marked valid and values large enough to overflow a loss. It never crashes on a
malformed header: that is a problem line naming the sample.
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


def _tar_members(path: Path, keep: int | None
                 ) -> tuple[int | None, list[tuple[str, dict[str, bytes]]], str | None]:
    """(sample count, (key, payloads {ext: bytes}) of the first `keep` samples (None = all),
    error) of a shard; only the kept payloads are read, so a large set is listed, not loaded."""
    keys: set[str] = set()
    payloads: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = Path(member.name).name.partition(".")
                keys.add(key)
                if key in payloads or keep is None or len(payloads) < keep:
                    payloads.setdefault(key, {})[ext] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as err:
        return None, list(payloads.items()), f"{path.name}: {err}"
    return len(keys), list(payloads.items()), None


# values far beyond reflectance (~0-1) or radiance (~0-1000): a loss over them overflows
EXTREME_VALUE = 1e6


def _decode_one(key: str, members: dict[str, bytes], tile: int | None
                ) -> tuple[dict | None, str | None]:
    """(decoded sample with its `band_valid` [C], None) or (None, the reason it would be
    skipped in training, naming the key)."""
    try:
        s = decode_sample(members.get("npy", b""), members.get("json", b"{}"), key)
        header = json.loads(members["json"])
    except Exception as err:  # noqa: BLE001 - inspect reports every broken sample, never crashes
        return None, str(err) if isinstance(err, SampleDecodeError) else \
            f"sample '{key}': {type(err).__name__}: {err}"
    s["band_valid"] = np.asarray(header["band_valid"], dtype=bool)
    h, w = s["image"].shape[1:]
    if tile and (h, w) != (tile, tile):
        return None, (f"sample '{s['meta']['key']}': {h}x{w} tile in a shard set of "
                      f"{tile}x{tile} tiles (skipped in training)")
    return s, None


def _decode_stats(samples: list[tuple[str, dict[str, bytes]]], limit: int,
                  tile: int | None = None) -> dict[str, Any]:
    """Invalid fraction over the signal bands (band_valid True), share of flagged bands, value
    range, non-finite and extreme values among valid pixels of up to `limit` decoded samples,
    and the samples training would skip (with the reason, naming the key)."""
    invalid, flagged, low, high, broken = [], [], np.inf, -np.inf, []
    nonfinite, extreme = [], []
    for key, members in samples[:limit or None]:
        s, problem = _decode_one(key, members, tile)
        if s is None:
            broken.append(problem)
            continue
        band_valid = s["band_valid"]
        signal = s["valid"][band_valid]
        invalid.append(1.0 - float(signal.mean()) if signal.size else 1.0)
        flagged.append(1.0 - float(band_valid.mean()))
        values = s["image"][s["valid"]]
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            nonfinite.append(f"sample '{s['meta']['key']}': {bad} NaN/inf pixels marked valid")
        values = values[np.isfinite(values)]
        if values.size:
            low, high = min(low, float(values.min())), max(high, float(values.max()))
            peak = float(np.abs(values).max())
            if peak > EXTREME_VALUE:
                extreme.append(f"sample '{s['meta']['key']}': valid values up to {peak:.3g}, "
                               f"far beyond reflectance or radiance (a loss over them overflows)")
    return {"decoded": len(invalid), "broken": broken, "nonfinite": nonfinite,
            "extreme": extreme,
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
        want = None if not samples else max(samples - len(decoded_pool), 0)
        found, members, error = _tar_members(shard_dir / entry["name"], want)
        if error:
            errors.append(error)
        shards.append({"name": entry["name"], "count": entry["count"], "found": found})
        decoded_pool += members
    tiles = manifest.get("tiles", [])
    strata = {k: dict(Counter(str(_descriptors(t).get(k)) for t in tiles))
              for k in STRATA_KEYS if any(k in _descriptors(t) for t in tiles)}
    tile = manifest.get("tile") if isinstance(manifest.get("tile"), int) else None
    return {
        "dir": str(shard_dir), "total": manifest["total"], "sensors": manifest["sensors"],
        "band_counts": manifest["band_counts"], "bounds": manifest.get("bounds"),
        "tile": manifest.get("tile"), "dtype": manifest.get("dtype"),
        "report": {k: v for k, v in manifest.get("report", {}).items() if k != "scenes"},
        "shards": shards, "shard_errors": errors,
        "mismatched_shards": [s["name"] for s in shards
                              if s["found"] is not None and s["found"] != s["count"]],
        "strata": strata, "keys": [t["key"] for t in tiles[:keys]],
        "decoded": _decode_stats(decoded_pool, samples, tile),
    }


def _descriptors(row: dict[str, Any]) -> dict[str, Any]:
    value = row.get("descriptors")
    return value if isinstance(value, dict) else {}


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
        skipped = f" ({len(d['broken'])} more would be skipped in training)" if d["broken"] else ""
        print(f"decoded {d['decoded']} tiles{skipped}: invalid fraction "
              f"{d['invalid_fraction_mean']:.3f} "
              f"of signal bands, {d['flagged_band_fraction_mean']:.1%} of bands flagged "
              f"(absorption), values {lo:.4g}..{hi:.4g}")
    elif d["broken"]:
        print(f"none of the {len(d['broken'])} tiles read decodes (see the problems)")
    print("sample keys: " + ", ".join(s["keys"]))


def _problems(s: dict[str, Any]) -> list[str]:
    out = list(s["shard_errors"])
    out += [f"{n}: manifest count differs from the tar contents"
            for n in s["mismatched_shards"]]
    out += s["decoded"]["broken"] + s["decoded"]["nonfinite"] + s["decoded"]["extreme"]
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
    except (KeyError, TypeError, AttributeError) as err:  # a manifest.json of the wrong shape
        print(f"specaware inspect: {Path(args.dir) / 'manifest.json'} is malformed "
              f"({type(err).__name__}: {err}); re-create the shard set with `specaware shard`",
              file=sys.stderr)
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
