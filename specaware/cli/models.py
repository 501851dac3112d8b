"""`specaware models`: the registered variants with their size and cost per tile.

Costs are counted, not timed: FlopCounterMode on the meta device (no weights are allocated, so
even specaware_large is free to measure), 2 FLOPs per multiply-add.
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="variants to measure (default: all of `specaware.list_models()`)")
    parser.add_argument("--bands", type=int, default=224, help="band count of the tile (224)")
    parser.add_argument("--tile", type=int, default=128, help="tile side in pixels (128)")
    parser.add_argument("--mask-ratio", type=float, default=None,
                        help="pretraining mask ratio (default: the variant's own)")


def stats_table(names: list[str], bands: int, tile: int, mask_ratio: float | None) -> str:
    """Markdown table: parameters (M) and GFLOPs per tile for pretraining and fine-tuning."""
    from specaware.model.variants import model_stats
    rows = ["| model | params (M) | encoder (M) | pretrain GFLOP/tile | encoder GFLOP/tile "
            "| embedding GFLOP/tile |", "|---|---:|---:|---:|---:|---:|"]
    for name in names:
        s = model_stats(name, bands=bands, tile=tile, mask_ratio=mask_ratio)
        rows.append(f"| {name} | {s['params'] / 1e6:.1f} | {s['encoder_params'] / 1e6:.1f} | "
                    f"{s['flops_per_tile'] / 1e9:.2f} | {s['encoder_flops_per_tile'] / 1e9:.2f} "
                    f"| {s['embedding_flops_per_tile'] / 1e9:.2f} |")
    return "\n".join(rows)


def main(args: argparse.Namespace) -> int:
    from specaware.model.variants import list_models
    known = list_models()
    unknown = [n for n in args.names if n not in known]
    if unknown:
        from specaware.model.variants import unknown_model_message
        print(f"error: {unknown_model_message(unknown[0])}", file=sys.stderr)
        return 2
    print(f"{args.bands} bands, {args.tile}x{args.tile} px tiles; pretrain = masked encoder + "
          "decoder + head; encoder = every patch (fine-tuning); embedding = HyperEmbedding + "
          "conditioning over all patches")
    print(stats_table(args.names or known, args.bands, args.tile, args.mask_ratio))
    return 0
