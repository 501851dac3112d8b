"""`specaware pretrain`: configs and overrides in, a DeepSpeed pretraining run out.

    specaware pretrain configs/pretrain/debug.yaml data.shards=shards/ train.steps=200
    specaware pretrain configs/pretrain/base.yaml checkpoint.run_dir=runs/b --resume auto
    torchrun --nproc_per_node 8 -m specaware.training configs/pretrain/base.yaml ...

Positional items are YAML files (applied in order) and `key=value` overrides (applied last,
whatever their position). Each launcher of launch/ runs this same entry point.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from specaware.config import ConfigError, config_yaml, split_items

__all__ = ["add_arguments", "main"]


def add_arguments(parser) -> None:
    parser.add_argument("items", nargs="*", metavar="CONFIG.yaml|key=value",
                        help="YAML config files, then key=value overrides (e.g. train.steps=100)")
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="config file(s), applied in order before positional ones "
                             "(as in `specaware finetune`)")
    parser.add_argument("--resume", default=None, metavar="auto|PATH",
                        help="'auto': newest complete checkpoint in checkpoint.run_dir (fresh "
                             "start if none); or a checkpoint / run folder")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as YAML (a valid config file: save it "
                             "and pass it back) with the DeepSpeed dict as comments, then exit")
    # the deepspeed launcher passes this; LOCAL_RANK in the environment wins when present
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None,
                        help=argparse.SUPPRESS)


def _logging() -> None:
    rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) or 0)
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")


def main(args) -> int:
    from specaware.training.config import load_config, resolved

    _logging()
    files, overrides = split_items(args.items)
    try:
        cfg = load_config(list(args.config) + files, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        from specaware.training.ds_config import make_ds_config
        from specaware.training.trainer import PRESET_DIR
        world = int(os.environ.get("WORLD_SIZE", "1"))
        try:
            ds = make_ds_config(cfg, world, PRESET_DIR)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(config_yaml(resolved(cfg), comment={f"deepspeed (world size {world})": ds}), end="")
        return 0
    from specaware.training.trainer import run
    try:
        run(cfg, resume=args.resume, local_rank=args.local_rank)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
