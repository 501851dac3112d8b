"""Auditing a classifier written by `specaware finetune` (OUT/<init>/seed<k>/best.safetensors,
docs/FEDERATED.md "Audit").

Target: the fine-tuned classifier as saved (its best epoch). Members: the samples of the
training split it was fitted on; non-members: its test split (used neither for training nor
for choosing the epoch), subsampled so both sets have the same size. The split is rebuilt from
the run's own config (stored in the checkpoint's JSON) and seed, exactly as the run drew it, so
the data files the run read must still be where its config says. The attacker's shadow features
are the public pretrained encoder's mean patch tokens (`model.checkpoint` of the run; the
random-init encoder when the run had none), as in the federated audit.

Scene and pixel classification only: membership of a segmentation or change map is a per-pixel
question these attacks do not model.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch

from specaware.audit.attacks import matched_sets
from specaware.audit.core import audit_predictions, summary_line, write_audit
from specaware.export import CheckpointError

log = logging.getLogger(__name__)
BATCH = 64


def run_seed(meta: dict, path: Path) -> int:
    """The seed of the run that wrote the checkpoint: its JSON's, else the seed<k> folder."""
    if "seed" in meta:
        return int(meta["seed"])
    found = re.fullmatch(r"seed(\d+)", path.parent.name)
    if found is None:
        raise CheckpointError(f"{path}: no seed in its JSON and not in a seed<k> folder; audit "
                              "the checkpoint where `specaware finetune` wrote it "
                              "(OUT/<init>/seed<k>/best.safetensors)")
    return int(found.group(1))


def _check_split(path: Path, meta: dict, rebuilt: dict[str, int]) -> None:
    """The rebuilt split must have the sizes the run recorded: if the data files changed,
    members and non-members would be guessed wrong and every figure would be meaningless."""
    recorded = (meta.get("data") or {}).get("split") or {}
    wrong = {k: (recorded[k], n) for k, n in rebuilt.items() if k in recorded and recorded[k] != n}
    if wrong:
        raise CheckpointError(
            f"{path}: the run's data no longer gives the split it trained on ("
            + ", ".join(f"{k}: {a} then, {b} now" for k, (a, b) in wrong.items())
            + "); audit it with the data files its finetune_config names, unchanged")


def _rows(dataset, index: np.ndarray):
    """Batches (collated as in training) of the samples `index` of `dataset`, in order."""
    from specaware.data.collate import collate
    for i in range(0, len(index), BATCH):
        yield collate([dataset[int(j)] for j in index[i:i + BATCH]])


@torch.no_grad()
def predictions(model, dataset, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities [N, K] float64, labels [N]) of the classifier on samples `index`."""
    model.eval()
    probs, labels = [], []
    for batch in _rows(dataset, index):
        probs.append(model(batch).float().softmax(-1).double())
        labels.append(batch["label"].reshape(-1))
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


@torch.no_grad()
def public_features(encoder, dataset, index: np.ndarray) -> np.ndarray:
    """[N, d] mean patch tokens of the public encoder (no head, no fine-tuning)."""
    from specaware.finetune.heads.common import pad_to_patches
    encoder.eval()
    feats = []
    for batch in _rows(dataset, index):
        batch, _ = pad_to_patches(batch, encoder.patch_size)
        feats.append(encoder.forward_features(batch).mean(dim=1))
    return torch.cat(feats).numpy()


def audit_checkpoint(path: str | Path, out: Path | None = None, shadows: int = 16,
                     shadow_steps: int = 60) -> dict:
    """Attack the classifier at `path`; writes OUT/audit.json and roc.png (OUT defaults to the
    checkpoint's folder + /audit) and returns the attacks' metrics."""
    from specaware.config import from_dict
    from specaware.finetune.checkpoint import load_finetuned, read_meta
    from specaware.finetune.config import FinetuneConfig
    from specaware.finetune.distributed import DistEnv
    from specaware.finetune.runner import PREPARE, make_encoder
    from specaware.optim.seed import seed_everything

    path = Path(path).with_suffix(".safetensors")
    meta = read_meta(path)
    if meta.get("task") != "classification":
        raise CheckpointError(f"{path}: a {meta.get('task')} model; the membership audit "
                              "attacks classifiers (task=classification) only")
    if "finetune_config" not in meta:
        raise CheckpointError(f"{path}: its JSON has no finetune_config, so its training split "
                              "cannot be rebuilt; audit a checkpoint written by "
                              "`specaware finetune`")
    cfg, seed = from_dict(FinetuneConfig, meta["finetune_config"]), run_seed(meta, path)
    cfg.optim.num_workers = 0
    seed_everything(seed)  # as run_once, so the split is the one the run drew
    data = PREPARE[cfg.data.kind](cfg, seed, DistEnv())
    train, test = data.train.dataset, data.test.dataset
    _check_split(path, meta, {"train": len(train), "test": len(test)})
    members, non_members = matched_sets(np.arange(len(train)), np.arange(len(test)), seed)
    model, _ = load_finetuned(path)
    prob_in, label_in = predictions(model, train, members)
    prob_out, label_out = predictions(model, test, non_members)
    init = "pretrained" if cfg.model.checkpoint else "random"
    encoder = make_encoder(cfg, init)
    feats = np.concatenate([public_features(encoder, train, members),
                            public_features(encoder, test, non_members)])
    prob, label = np.concatenate([prob_in, prob_out]), np.concatenate([label_in, label_out])
    member = np.r_[np.ones(len(members), bool), np.zeros(len(non_members), bool)]
    result = audit_predictions(prob, label, member, feats, data.num_classes, shadows=shadows,
                               shadow_steps=shadow_steps, seed=seed)
    title = f"{path.parent.parent.name}/{path.parent.name}/{path.stem}, {cfg.task}"
    write_audit(result, out or path.parent / "audit", {
        "title": title, "checkpoint": str(path), "seed": seed, "members": len(members),
        "non_members": len(non_members), "shadows": shadows, "shadow_steps": shadow_steps,
        "member_accuracy": float((prob_in.argmax(1) == label_in).mean()),
        "non_member_accuracy": float((prob_out.argmax(1) == label_out).mean())})
    log.info("audit %s: %s", title, summary_line(result))
    return result
