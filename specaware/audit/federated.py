"""Auditing the final client models of a federated run (or any `ClientModel` on client data).

Target: a client's final personalised model (shared parameters as aggregated, its private ones).
Members: the client's training tiles; non-members: its held-out tiles (never used in training
nor validation), subsampled so both sets have the same size. The attacker's shadow features
are the public encoder's pooled tokens without prompts (see `specaware.audit.lira`).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from specaware.audit.attacks import matched_sets
from specaware.audit.core import audit_predictions, summary_line, write_audit

log = logging.getLogger(__name__)


@torch.no_grad()
def public_features(setup, index: np.ndarray) -> np.ndarray:
    """[N, d] mean patch tokens of the frozen public encoder (no prompts, no head)."""
    enc = setup.encoder.eval()
    feats = [enc.forward_features(setup.data.batch(index[i:i + 64])).mean(dim=1)
             for i in range(0, len(index), 64)]
    return torch.cat(feats).numpy()


def audit_model(model, setup, out: Path, title: str, shadows: int, steps: int,
                seed: int = 0, features: dict | None = None) -> dict:
    """Audit one client model; writes out/audit.json + roc.png, returns the attacks' metrics.
    `features` caches the public features per client between strategies."""
    from specaware.federated.client import predict
    members, non_members = matched_sets(setup.data.indices("train"),
                                        setup.data.indices("holdout"), seed)
    index = np.r_[members, non_members]
    member = np.r_[np.ones(len(members), bool), np.zeros(len(non_members), bool)]
    prob = predict(model, setup, index).double().numpy()
    key = (setup.partition, len(index))
    if features is not None and key in features:
        feats = features[key]
    else:
        feats = public_features(setup, index)
        if features is not None:
            features[key] = feats
    result = audit_predictions(prob, setup.data.label[index], member, feats, setup.num_classes,
                               shadows=shadows, shadow_steps=steps, seed=seed)
    train_acc = float((prob[member].argmax(1) == setup.data.label[members]).mean())
    held_acc = float((prob[~member].argmax(1) == setup.data.label[non_members]).mean())
    write_audit(result, out, {"title": title, "members": len(members),
                              "non_members": len(non_members), "shadows": shadows,
                              "shadow_steps": steps, "member_accuracy": train_acc,
                              "non_member_accuracy": held_acc})
    log.warning("audit %s: %s", title, summary_line(result))
    return result


def audit_run(cfg, run_dir: Path) -> dict[str, dict[str, float]]:
    """Every strategy's final client models of a run; OUT/audit.json holds all metrics, the
    return value the mean AUC per strategy and attack over the audited clients."""
    from specaware.federated.model import ClientModel
    from specaware.federated.setup import CONFIG_FILE, load_setup
    from safetensors.torch import load_file
    clients = cfg.audit_cfg.clients or list(range(len(cfg.clients)))
    full: dict = {}
    means: dict[str, dict[str, float]] = {}
    cache: dict = {}
    for strategy in cfg.strategies:
        per_client = {}
        for i in clients:
            setup = load_setup(str(run_dir / CONFIG_FILE), i)
            path = setup.model_path(strategy)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no final model of client {i} for {strategy}; "
                                        "the federated run did not finish its last round")
            model = ClientModel(setup.encoder, setup.num_classes, strategy, cfg.model)
            model.load_state_of(load_file(str(path)))
            per_client[str(i)] = audit_model(
                model, setup, run_dir / "audit" / strategy / f"client-{i}",
                f"{strategy}, client {setup.data.name}", cfg.audit_cfg.shadows,
                cfg.audit_cfg.shadow_epochs, cfg.train.seed, cache)
        full[strategy] = per_client
        attacks = next(iter(per_client.values())).keys()
        means[strategy] = {a: float(np.mean([per_client[c][a]["auc"] for c in per_client]))
                           for a in attacks}
    slim = {s: {c: {a: {k: v for k, v in m.items() if k != "roc"} for a, m in r.items()}
                for c, r in per.items()} for s, per in full.items()}
    (run_dir / "audit.json").write_text(json.dumps({"mean_auc": means, "strategies": slim},
                                                   indent=1))
    return means
