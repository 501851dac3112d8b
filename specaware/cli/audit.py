"""`specaware audit`: black-box membership inference against fine-tuned classifiers.

    specaware audit RUN_DIR [--strategy prompt_dual ...] [--client 0 ...] [--shadows 16]
        audits the final client models of a `specaware federated` run (RUN_DIR/audit.json,
        RUN_DIR/audit/<strategy>/client-<i>/{audit.json, roc.png})
    specaware audit OUT/pretrained/seed0[/best.safetensors] [--shadows 16] [--out DIR]
        audits a classifier written by `specaware finetune` against its own training split
        (DIR defaults to the checkpoint's folder + /audit: audit.json, roc.png)
    specaware audit --quick --out DIR
        makes small client data on the fly, fine-tunes one client's classifier (prompts + head
        on the frozen encoder, `local` strategy) and audits it (DIR/audit.json, DIR/roc.png)

Attacks: entropy, modified entropy (Song & Mittal 2021), LiRA with shadow models (Carlini et
al. 2022); see docs/FEDERATED.md "Audit".
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", nargs="?", type=Path,
                        help="folder of a `specaware federated` run, or a classifier "
                        "checkpoint of `specaware finetune` (OUT/<init>/seed<k>/best.safetensors)")
    parser.add_argument("--quick", action="store_true",
                        help="build small data, fine-tune one classifier and audit it")
    parser.add_argument("--out", type=Path, help="output folder (--quick: default audit_quick; "
                        "a checkpoint: default its folder + /audit)")
    parser.add_argument("--strategy", action="append", default=[],
                        help="strategies to audit (default: all of the run)")
    parser.add_argument("--client", type=int, action="append", default=[],
                        help="client indices to audit (default: all)")
    parser.add_argument("--shadows", type=int, help="LiRA shadow models (default: the "
                        "federated config's; 16 for a checkpoint)")
    parser.add_argument("--epochs", type=int, default=30,
                        help="--quick: fine-tuning epochs of the audited classifier")


def main(args) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.quick:
        return quick(args.out or Path("audit_quick"), args.epochs, args.shadows)
    if args.run_dir is None:
        print("specaware audit: give a federated run folder, a fine-tuned classifier "
              "checkpoint, or --quick --out DIR", file=sys.stderr)
        return 2
    if (args.run_dir / "best.safetensors").is_file():    # OUT/<init>/seed<k> of a finetune run
        args.run_dir = args.run_dir / "best.safetensors"
    if args.run_dir.suffix in (".safetensors", ".json"):
        return audit_finetuned(args)
    found = sorted(args.run_dir.glob("*/seed*/best.safetensors"))
    if (args.run_dir / "results.json").is_file() and found:
        print(f"specaware audit: {args.run_dir} is a `specaware finetune` output folder; audit "
              f"one of its classifiers, e.g. `specaware audit {found[0]}`", file=sys.stderr)
        return 2
    from specaware.audit.federated import audit_run
    from specaware.federated.setup import CONFIG_FILE, read_config
    try:
        cfg, run_dir = read_config(args.run_dir / CONFIG_FILE)
    except FileNotFoundError as e:
        print(f"specaware audit: {e}", file=sys.stderr)
        return 2
    bad = [s for s in args.strategy if s not in cfg.strategies]
    if bad:
        print(f"specaware audit: strategies {bad} are not in the run ({cfg.strategies})",
              file=sys.stderr)
        return 2
    audit = replace(cfg.audit_cfg, clients=args.client or cfg.audit_cfg.clients,
                    shadows=args.shadows or cfg.audit_cfg.shadows)
    cfg = replace(cfg, strategies=args.strategy or cfg.strategies, audit_cfg=audit)
    means = audit_run(cfg, run_dir)
    for strategy, aucs in means.items():
        print(f"{strategy}: " + ", ".join(f"{a} AUC {v:.3f}" for a, v in aucs.items()))
    print(f"outputs: {run_dir / 'audit.json'}")
    return 0


def audit_finetuned(args) -> int:
    """A `specaware finetune` classifier against its own training split."""
    from specaware.audit.finetuned import audit_checkpoint
    from specaware.config import ConfigError
    from specaware.export import CheckpointError
    try:
        result = audit_checkpoint(args.run_dir, args.out, shadows=args.shadows or 16)
    except (CheckpointError, ConfigError, FileNotFoundError, ValueError) as e:
        print(f"specaware audit: {e}", file=sys.stderr)
        return 2
    print(", ".join(f"{a} AUC {m['auc']:.3f}" for a, m in result.items()))
    out = args.out or args.run_dir.parent / "audit"
    print(f"outputs: {out / 'audit.json'}, {out / 'roc.png'}")
    return 0


def quick(out: Path, epochs: int, shadows: int | None) -> int:
    """Quick data (configs/federated/quick.yaml), client 0's classifier, its audit."""
    import numpy as np
    import torch

    from specaware.audit.federated import audit_model
    from specaware.config import build
    from specaware.federated.client import fit
    from specaware.federated.config import FederatedConfig
    from specaware.federated.data import ClientData
    from specaware.federated.model import ClientModel
    from specaware.federated.partition import build_clients
    from specaware.federated.run import write_config
    from specaware.federated.setup import ClientSetup, load_encoder
    cfg = build(FederatedConfig, ["federated/quick.yaml"],
                [f"out={out}", f"train.local_epochs={epochs}", "strategies=[local]"])
    if shadows:
        cfg = replace(cfg, audit_cfg=replace(cfg.audit_cfg, shadows=shadows))
    write_config(cfg, out)
    build_clients(cfg.data, cfg.clients, out / "data")
    torch.set_num_threads(1)
    encoder = load_encoder(cfg).requires_grad_(False)
    setup = ClientSetup(cfg, out, 0, ClientData.load(out / "data" / "client-0.npz"), encoder)
    torch.manual_seed(cfg.train.seed)
    model = ClientModel(encoder, setup.num_classes, "local", cfg.model)
    loss = fit(model, setup, None, 1)
    result = audit_model(model, setup, out, f"local fine-tuning, client {setup.data.name}, "
                         f"{epochs} epochs", cfg.audit_cfg.shadows, cfg.audit_cfg.shadow_epochs,
                         cfg.train.seed)
    print(f"classifier: client {setup.data.name}, {epochs} epochs, final train loss {loss:.3f}")
    print("| attack | AUC | balanced acc. | TPR@1%FPR | TPR@0.1%FPR |")
    print("|---|---|---|---|---|")
    for name, m in result.items():
        print(f"| {name} | {m['auc']:.3f} | {m['balanced_accuracy']:.3f} | "
              f"{m['tpr_at_1pct_fpr']:.3f} | {m['tpr_at_0.1pct_fpr']:.3f} |")
    n = next(iter(result.values()))
    print(f"members {n['members']}, non-members {n['non_members']} (smallest FPR above 0: "
          f"{n['min_fpr']:.3f}); outputs: {out / 'audit.json'}, {out / 'roc.png'}")
    return 0 if np.isfinite(n["auc"]) else 1
