"""`specaware finetune`: fine-tune a head on a pretrained (or random) encoder.

    specaware finetune --task classification --config configs/finetune/indian_pines.yaml \\
        model.checkpoint=run/export.safetensors protocol.seeds=[0,1,2]
    specaware finetune --task change --config configs/finetune/bay_area.yaml --init both
    specaware finetune configs/finetune/bay_area.yaml --init both      # same: files may be positional
    torchrun --nproc_per_node 4 -m specaware.finetune configs/finetune/bay_area.yaml \\
        precision=bf16 --resume auto                  # data-parallel, continues after a crash

`--init both` trains the same task from the pretrained and from a random encoder and prints
the table (task, metric, pretrained, random) with mean ± std over the seeds.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from specaware.config import ConfigError, build, config_yaml, split_items, to_dict
from specaware.finetune.config import FinetuneConfig, expand_file_lists


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=["classification", "segmentation", "change"],
                        help="downstream task (overrides the config's `task`)")
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="config file(s), applied in order (configs/finetune/*.yaml)")
    parser.add_argument("--init", choices=["pretrained", "random", "both"],
                        help="encoder initialisation (overrides `model.init`); both = compare")
    parser.add_argument("--checkpoint", help="pretrained export OUT.safetensors "
                        "(overrides `model.checkpoint`)")
    parser.add_argument("--out", help="output folder (overrides `out`)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as YAML (a valid config file), then exit")
    parser.add_argument("--resume", choices=["auto"], help="auto: continue an interrupted run "
                        "from its last epoch checkpoint (overrides `resume`)")
    parser.add_argument("--precision", choices=["fp32", "bf16"],
                        help="bf16 autocast on GPU (overrides `precision`)")
    parser.add_argument("overrides", nargs="*", metavar="CONFIG.yaml|KEY=VALUE",
                        help="config files (after any --config), then overrides, e.g. "
                             "optim.epochs=20 protocol.per_class=10; as in `specaware pretrain`")


def _flag_overrides(args) -> list[str]:
    flags = {"task": args.task, "model.init": args.init, "model.checkpoint": args.checkpoint,
             "out": args.out, "resume": args.resume, "precision": args.precision}
    extra = [f"{k}={v}" for k, v in flags.items() if v is not None]
    return extra + (["progress=false"] if args.no_progress else [])


def main(args) -> int:
    from specaware.data.band_metadata import RasterMetadataError
    from specaware.finetune.api import CheckpointError
    from specaware.finetune.runner import result_table, run
    from specaware.sensors import UnknownSensorError
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    files, overrides = split_items(list(args.overrides))
    try:
        cfg = build(FinetuneConfig, list(args.config) + files, overrides + _flag_overrides(args))
        expand_file_lists(cfg.data)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(config_yaml(to_dict(cfg)), end="")
        return 0
    try:
        if cfg.protocol.active.rounds:
            from specaware.finetune.active import active_table, run_active
            print(active_table(run_active(cfg)))
            return 0
        if cfg.protocol.shots:
            from specaware.finetune.kshot import run_shots, shot_table
            print(shot_table(run_shots(cfg)))
            return 0
        summary = run(cfg)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except CheckpointError as e:
        print(f"checkpoint error: {e}", file=sys.stderr)
        return 2
    except (RasterMetadataError, UnknownSensorError) as e:
        print(f"data error: {e}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":     # torchrun: one table, from rank 0
        print(result_table(cfg.task, summary))
        print(f"outputs: {cfg.out}")
    return 0
