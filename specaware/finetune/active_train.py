"""Closed-loop active learning: the encoder trains between rounds (`protocol.active.train`).

HSSAL (arXiv 2511.18058, sec. 3) closes the loop: weak-to-strong self-training on the
unlabelled pool improves the *features*, and with them the uncertainty that picks the next
queries. `train=linear` (default, active.py) keeps the frozen encoder's features of round 0.
`train=prompt|full` builds the k-shot method's model (kshot.method_model: prompt tokens in the
frozen encoder, or every weight) and, before each round's scoring, fine-tunes it with the shared
loop (train.fit, optim.* rates; epochs = protocol.active.train_epochs) on

  - the labelled samples (initial + queried, the oracle's labels), and
  - the previous round's confident pseudo-labels (active strategy only; the `pseudo_max` most
    confident), seen through a strong view (per-band gain and additive noise) while the weak
    view (the clean sample) gave the label;

then recomputes every sample's pooled feature with the tuned encoder for the round's linear
scorer (active.active_round). The model carries over from round to round; each (seed,
strategy) starts from the pretrained weights. Pseudo-labels never enter the labelled set.

Letters: n samples, d feature width, c bands, p patch side.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
from dataclasses import replace

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from specaware.data.collate import collate, to_device

log = logging.getLogger(__name__)


class Rows(Dataset):
    """Samples `rows` of `dataset` with the labels `labels`; `strong` adds the strong view:
    image [c, p, p] * N(1, 0.1) per band + N(0, 0.05 std(image)) per value, fresh each read."""

    def __init__(self, dataset, rows: np.ndarray, labels: np.ndarray, strong: bool = False,
                 seed: int = 0):
        self.dataset, self.rows, self.labels = dataset, np.asarray(rows), np.asarray(labels)
        self.strong, self.seed, self.reads = strong, seed, 0

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        sample = dict(self.dataset[int(self.rows[i])])
        sample["label"] = int(self.labels[i])
        if self.strong:
            self.reads += 1
            rng = np.random.default_rng([self.seed, int(self.rows[i]), self.reads])
            image = np.asarray(sample["image"], np.float32)
            gain = rng.normal(1.0, 0.1, (image.shape[0], 1, 1)).astype(np.float32)
            noise = rng.normal(0.0, 0.05 * float(image.std()) + 1e-6, image.shape)
            sample["image"] = image * gain + noise.astype(np.float32)
        return sample


def pooled_features(model: torch.nn.Module, dataset, batch_size: int) -> np.ndarray:
    """[n, d] pooled features of a classification model (its head bypassed), standardised
    per dimension (zero mean, unit std over the n samples)."""
    head, model.head = model.head, torch.nn.Identity()
    device = next(model.parameters()).device
    try:
        model.eval()
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
        with torch.no_grad():
            feats = np.concatenate([model(to_device(b, device)).float().cpu().numpy()
                                    for b in loader])
    finally:
        model.head = head
    return (feats - feats.mean(0)) / (feats.std(0) + 1e-6)


class RoundTrainer:
    """The model of `protocol.active.train` over one (seed, strategy) run of the loop."""

    def __init__(self, cfg, dataset, labels: np.ndarray, classes: int, pool: str, seed: int):
        from specaware.finetune.checkpoint import build_head
        from specaware.finetune.distributed import resolve_device
        from specaware.finetune.kshot import method_model
        from specaware.finetune.runner import make_encoder
        from specaware.optim.seed import seed_everything
        self.cfg, self.dataset, self.labels = cfg, dataset, labels
        self.classes, self.seed = classes, seed
        seed_everything(seed)
        m = method_model(cfg.model, cfg.protocol.active.train)
        m.pool = pool
        encoder = make_encoder(cfg, "pretrained" if cfg.model.checkpoint else "random")
        self.model = build_head("classification", encoder, classes, m)
        self.device = resolve_device(cfg.device)
        self.model.to(self.device)

    def features(self) -> np.ndarray:
        return pooled_features(self.model, self.dataset, self.cfg.optim.batch_size)

    def fit_round(self, labelled: np.ndarray, pseudo: np.ndarray,
                  pseudo_labels: np.ndarray) -> np.ndarray:
        """Fine-tune on the labelled rows + the first `pseudo_max` pseudo rows (strong view);
        returns the new features [n, d] of every sample."""
        from specaware.finetune.train import fit
        a, bs = self.cfg.protocol.active, self.cfg.optim.batch_size
        keep = slice(0, max(0, a.pseudo_max))
        parts = [Rows(self.dataset, labelled, self.labels[labelled])]
        if len(pseudo[keep]):
            parts.append(Rows(self.dataset, pseudo[keep], pseudo_labels[keep], True, self.seed))
        g = torch.Generator().manual_seed(self.seed)
        train = DataLoader(ConcatDataset(parts), batch_size=bs, shuffle=True, generator=g,
                           collate_fn=collate)
        # no held-out labels in an active loop: "validation" is the labelled set itself
        val = DataLoader(parts[0], batch_size=bs, collate_fn=collate)
        optim = replace(copy.deepcopy(self.cfg.optim), epochs=a.train_epochs,
                        patience=a.train_epochs + 1)
        with contextlib.redirect_stdout(io.StringIO()) as epochs:   # fit's per-epoch lines
            fit(self.model, train, val, "classification", self.classes, optim, self.device,
                progress=False)
        log.debug("round fine-tuning (%d labelled, %d pseudo): %s", len(labelled),
                  min(len(pseudo), a.pseudo_max), epochs.getvalue().strip())
        return self.features()
