"""`specaware curate SHARDS --out KEYS.json`: training-free pruning of a shard set
(specaware/data/prune.py: entropy filter, scene-aware k-means, per-cluster quotas).

    specaware curate shards/ --out keys.json --fraction 0.5 --clusters 8 --drop-quantile 0.05
    specaware curate shards/ --out keys.json --checkpoint run/export.safetensors   # encoder features
    specaware pretrain ... data.curation.keys_file=keys.json
"""
from __future__ import annotations

import argparse
import logging
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="shard folder (with manifest.json)")
    parser.add_argument("--out", required=True, help="KEYS.json to write (kept keys + report)")
    parser.add_argument("--fraction", type=float, default=0.5,
                        help="share of the manifest's tiles to keep (0.5)")
    parser.add_argument("--clusters", type=int, default=8, help="k-means clusters (8)")
    parser.add_argument("--seed", type=int, default=0, help="k-means seed (0)")
    parser.add_argument("--checkpoint", default="", help="cluster a pretrained encoder's pooled "
                        "features (an export) instead of the spectral-spatial descriptor")
    parser.add_argument("--min-entropy", type=float, default=None,
                        help="first remove tiles below this entropy (bits)")
    parser.add_argument("--drop-quantile", type=float, default=None,
                        help="first remove this fraction of tiles with the lowest entropy")


def main(args) -> int:
    from specaware.data.curate import CurationError
    from specaware.data.prune import prune_shards
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = prune_shards(args.dir, args.out, args.fraction, args.clusters, args.seed,
                              args.checkpoint, args.min_entropy, args.drop_quantile)
    except (CurationError, FileNotFoundError) as e:
        print(f"curate error: {e}", file=sys.stderr)
        return 2
    r = result["report"]
    print(f"{args.dir}: kept {r['kept']} of {r['tiles']} tiles ({r['features']} features, "
          f"{r['removed_low_entropy']} removed for low entropy) -> {args.out}")
    for c in r["clusters"]:
        print(f"  cluster {c['cluster']:>3}: {c['tiles']:>6} tiles, kept {c['kept']:>6}")
    return 0
