"""`specaware inspect DIR`: print the summary of a shard set (specaware/data/inspect.py).

Counts per sensor and band count, shard sizes checked against the tar contents, the tiling
report, descriptor strata, invalid fraction and value range of a decoded sample, a few sample
keys; with --balance/--min-entropy/--drop-quantile, what curation would keep. Problems (what
training would skip or choke on) are printed one per line and exit 1.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from specaware.data.inspect import curation_report, problems, summarise


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


def _curation(args: argparse.Namespace) -> dict[str, Any] | None:
    balance = [b.strip() for b in (args.balance or "").split(",") if b.strip()]
    return curation_report(args.dir, balance, args.min_entropy, args.drop_quantile,
                           args.max_oversample)


def main(args: argparse.Namespace) -> int:
    try:
        summary = summarise(args.dir, samples=args.samples, keys=args.keys)
        curation = _curation(args)
    except (OSError, ValueError) as err:  # missing, denied, no credentials, not a manifest
        print(f"specaware inspect: {err}", file=sys.stderr)
        return 2
    except (KeyError, TypeError, AttributeError) as err:  # a manifest.json of the wrong shape
        from specaware.data.object_store import is_store_url, join
        manifest = (join(args.dir, "manifest.json") if is_store_url(args.dir)
                    else Path(args.dir) / "manifest.json")
        print(f"specaware inspect: {manifest} is malformed "
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
    found = problems(summary)
    for line in found:
        print(f"problem: {line}", file=sys.stderr)
    return 1 if found else 0
