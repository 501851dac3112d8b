"""The `specaware` command. Thin: each subcommand lives in its module and is imported only when
used, so `specaware sensors` does not pay for importing torch and deepspeed.

Every subcommand module exposes `add_arguments(parser)` and `main(args) -> int`.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "sensors": ("specaware.sensors.cli", "list sensors, or print one sensor's band table"),
    "shard": ("specaware.data.shard_cli", "tile scenes into webdataset shards + manifest"),
    "inspect": ("specaware.data.inspect", "summarise a shard set"),
    "synth": ("specaware.synth.cli", "generate synthetic scenes from real measured spectra"),
    "pretrain": ("specaware.training.cli", "pretrain the masked autoencoder with DeepSpeed"),
    "export": ("specaware.training.export", "consolidate a checkpoint into .safetensors + JSON"),
    "finetune": ("specaware.finetune.cli", "fine-tune a downstream head on a pretrained encoder"),
    "predict": ("specaware.finetune.predict", "sliding-window prediction of a full scene to GeoTIFF"),
    "models": ("specaware.models_cli", "list model variants with parameters and FLOPs per tile"),
    "bench": ("specaware.bench_cli", "run the benchmarks in bench/ and print their ratios"),
    "demo": ("specaware.demo", "the end-to-end demo on the embedded default dataset"),
}

# commands that run model steps; see specaware.model.runtime (SPECAWARE_MALLOC=system opts out)
TRAINING_COMMANDS = {"pretrain", "finetune", "predict", "demo"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = argparse.ArgumentParser(
        prog="specaware",
        description="Hyperspectral foundation models: any band set, DeepSpeed pretraining, "
        "fine-tuning heads.",
    )
    top.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND",
                     help="; ".join(f"{k}: {v[1]}" for k, v in COMMANDS.items()))
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        top.parse_args([name])  # prints the usage error and exits 2
    if name in TRAINING_COMMANDS:
        from specaware.model.runtime import tune_cpu_malloc
        tune_cpu_malloc()   # CPU steps halve: large tensors stop paying page faults every step
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"specaware {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_intermixed_args(rest)   # files and key=value may sit either side of flags
    return int(module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
