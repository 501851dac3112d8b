"""`specaware federated`: federated fine-tuning on Flower, every strategy side by side.

    specaware federated configs/federated/three_sensors.yaml model.checkpoint=run/export.safetensors
    specaware federated --quick --out fed_quick                   # small data made on the fly
    specaware federated --quick --out fed_quick audit=true        # plus membership inference

Writes OUT/rounds.jsonl, OUT/summary.md (table), OUT/accuracy_vs_rounds_and_bytes.png; see
docs/FEDERATED.md for the method, the strategies and the deployment engine.
"""
from __future__ import annotations

import argparse
import logging
import sys

QUICK_CONFIG = "federated/quick.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help=f"small synthetic data and few rounds (configs/{QUICK_CONFIG}); "
                        "a few minutes on 2 CPU cores")
    parser.add_argument("--out", help="output folder (overrides `out`)")
    parser.add_argument("items", nargs="*", metavar="CONFIG.yaml|KEY=VALUE",
                        help="config files (configs/federated/*.yaml), then overrides such as "
                        "train.rounds=20 data.alpha=0.1 audit=true")


def build_config(args):
    from specaware.config import build
    from specaware.federated.config import FederatedConfig
    from specaware.config import split_items
    files, overrides = split_items(list(args.items))
    files = ([QUICK_CONFIG] if args.quick else []) + files
    extra = [f"out={args.out}"] if args.out else []
    return build(FederatedConfig, files, overrides + extra)


def main(args) -> int:
    from specaware.config import ConfigError
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("flwr").propagate = False     # Flower prints its own log lines
    try:
        cfg = build_config(args)
        from specaware.federated.config import validate
        validate(cfg)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    from specaware.federated.run import run
    result = run(cfg)
    print(result["table"])
    print(f"outputs: {result['out']}")
    return 0
