"""How big the demo is: the full default (under 15 minutes on 2 CPU cores), `--quick`, and
explicit overrides (tests use tiny sizes). Every number that shapes a result lives here, so the
stage markers can tell whether a previous run's outputs still apply."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace

from specaware.resources import config_path

CONFIG_DIR = config_path("demo")


@dataclass(frozen=True)
class Plan:
    scenes: int = 8                  # synthetic scenes (each through 4 sensors, 2 dates)
    size: int = 128                  # pixels per side
    seed: int = 0
    pretrain_steps: int = 600
    pretrain_tile: int = 32          # shard tile size, pixels
    procs: int = 1                   # DeepSpeed processes (torchrun when > 1)
    sensor: str = "sentinel-2a"      # sensor of the downstream tasks
    class_tile: int = 16             # scene-classification tile, pixels
    class_purity: float = 0.7        # dominant-class share a classification tile needs
    max_tiles_per_class: int = 40
    finetune_seeds: tuple[int, ...] = (0, 1, 2)
    finetune_epochs: int = 0         # 0 = the task config's value
    config_dir: str = str(CONFIG_DIR)
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


QUICK = dict(scenes=4, size=64, pretrain_steps=120, class_tile=8, finetune_seeds=(0,),
             finetune_epochs=8)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_procs() -> int:
    """2 DeepSpeed processes when 2 cores are there (the demo's target machine), else 1."""
    return 2 if available_cores() >= 2 else 1


def make_plan(args) -> Plan:
    """The full plan, shrunk by `--quick`, then explicit flags."""
    plan = Plan(procs=default_procs())
    if args.quick:
        plan = replace(plan, **QUICK)
    explicit = {"scenes": args.scenes, "size": args.size, "pretrain_steps": args.steps,
                "procs": args.procs, "finetune_epochs": args.epochs,
                "finetune_seeds": tuple(args.seeds) if args.seeds else None,
                "seed": args.seed, "sensor": args.sensor}
    plan = replace(plan, **{k: v for k, v in explicit.items() if v is not None})
    if plan.procs < 1 or plan.scenes < 2 or plan.size < 2 * plan.pretrain_tile:
        raise SystemExit(f"demo: needs --procs >= 1, --scenes >= 2 and --size >= "
                         f"{2 * plan.pretrain_tile} (got {plan.procs}, {plan.scenes}, {plan.size})")
    return plan
