"""The plain fine-tuning loop: AdamW (lower learning rate for encoder weights, no decay on norms
and biases), warmup + cosine schedule, validation every epoch, early stopping on the task's
headline metric (OA / mIoU / change kappa: unlike F1, kappa gives a constant all-change map 0),
best weights kept and saved as safetensors. `class_weight=balanced` weights the loss by inverse
class frequency (change maps are mostly "no change").

Losses ignore unlabelled targets (-1). Batches follow INTERFACES.md "A batch"; change batches
are {"t1": batch, "t2": batch, "label": [B, H, W]}.
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from specaware.finetune.config import OptimConfig
from specaware.finetune.datasets.collate import to_device
from specaware.finetune.metrics import HEADLINE, confusion_matrix, task_metrics

log = logging.getLogger(__name__)
IGNORE = -1


@dataclass
class FitResult:
    best_epoch: int
    best_score: float
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False


def logits_and_labels(model: nn.Module, batch: dict,
                      task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [B, K] or [B, K, H, W] and the matching labels of one batch."""
    if task == "change":
        return model(batch["t1"], batch["t2"]), batch["label"]
    return model(batch), batch["label"]


def _param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    groups: dict[tuple[bool, bool], list] = {}
    encoder_ids = {id(p) for p in getattr(model, "encoder", nn.Module()).parameters()}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = (id(p) in encoder_ids, p.ndim <= 1 or name.endswith(".bias"))
        groups.setdefault(key, []).append(p)
    return [{"params": ps, "lr": cfg.encoder_lr if enc else cfg.lr,
             "weight_decay": 0.0 if no_decay else cfg.weight_decay}
            for (enc, no_decay), ps in groups.items()]


def _schedule(optimizer, total: int, warmup_fraction: float):
    warmup = max(1, int(total * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def evaluate(model: nn.Module, loader, task: str, num_classes: int,
             device: torch.device) -> tuple[np.ndarray, dict]:
    """Confusion matrix [K, K] over the loader and the task's metrics."""
    model.eval()
    cm = np.zeros((num_classes, num_classes), np.int64)
    for batch in loader:
        batch = to_device(batch, device)
        logits, labels = logits_and_labels(model, batch, task)
        cm += confusion_matrix(logits.argmax(1), labels, num_classes, IGNORE)
    return cm, task_metrics(cm, task)


def class_weights(loader, task: str, num_classes: int, max_batches: int = 200) -> torch.Tensor:
    """Inverse-frequency weights [K] (mean 1 over the classes present) from the labels of up to
    `max_batches` training batches. Change maps are mostly "no change"; unweighted cross-entropy
    then sits in the all-no-change minimum for many epochs."""
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        labels = batch["label"].reshape(-1)
        labels = labels[labels != IGNORE]
        counts += torch.bincount(labels, minlength=num_classes)[:num_classes].double()
    present = counts > 0
    weights = torch.zeros(num_classes, dtype=torch.float64)
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    log.info("class weights (%s): %s", task, [round(float(w), 3) for w in weights])
    return weights.float()


def _train_epoch(model, loader, optimizer, scheduler, cfg: OptimConfig, task: str, device,
                 bar, weight: torch.Tensor | None = None) -> float:
    model.train()
    total, count = 0.0, 0
    for step, batch in enumerate(loader):
        if cfg.max_steps_per_epoch and step >= cfg.max_steps_per_epoch:
            break
        batch = to_device(batch, device)
        logits, labels = logits_and_labels(model, batch, task)
        if (labels == IGNORE).all():
            continue
        loss = F.cross_entropy(logits, labels, weight=weight, ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        value = loss.item()
        total, count = total + value, count + 1
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}")
    return total / max(count, 1)


def _optimizer(model: nn.Module, train_loader, cfg: OptimConfig):
    """AdamW over the trainable parameter groups, its schedule, and steps per epoch."""
    params = _param_groups(model, cfg)
    if not params:
        raise ValueError("nothing to train: every parameter is frozen")
    optimizer = torch.optim.AdamW(params)
    steps = len(train_loader) if cfg.max_steps_per_epoch == 0 else min(
        len(train_loader), cfg.max_steps_per_epoch)
    return optimizer, _schedule(optimizer, steps * cfg.epochs, cfg.warmup_fraction), steps


def fit(model: nn.Module, train_loader, val_loader, task: str, num_classes: int,
        cfg: OptimConfig, device: torch.device, progress: bool = True,
        on_best: Callable[[nn.Module, int, dict], None] | None = None) -> FitResult:
    """Train with early stopping; the model ends holding its best-validation weights.

    `on_best(model, epoch, val_metrics)` is called at each new best (e.g. to save a checkpoint).
    """
    model.to(device)
    optimizer, scheduler, steps = _optimizer(model, train_loader, cfg)
    metric = HEADLINE[task]
    weight = (class_weights(train_loader, task, num_classes).to(device)
              if cfg.class_weight == "balanced" else None)
    result, best_state, waited = FitResult(-1, -math.inf), None, 0
    # disable=None: no bar when stderr is not a terminal (logs), epoch lines are kept
    with tqdm(total=steps * cfg.epochs, disable=None if progress else True,
              desc=f"finetune {task}", dynamic_ncols=True) as bar:
        for epoch in range(cfg.epochs):
            loss = _train_epoch(model, train_loader, optimizer, scheduler, cfg, task, device, bar,
                                weight)
            _, val = evaluate(model, val_loader, task, num_classes, device)
            score = val[metric] if not math.isnan(val[metric]) else -math.inf
            result.history.append({"epoch": epoch, "loss": loss, f"val_{metric}": val[metric]})
            bar.write(f"epoch {epoch}: loss {loss:.4f}  val {metric} {val[metric]:.4f}")
            if score > result.best_score:
                result.best_epoch, result.best_score, waited = epoch, score, 0
                best_state = copy.deepcopy(model.state_dict())
                if on_best is not None:
                    on_best(model, epoch, val)
            else:
                waited += 1
                if waited >= cfg.patience:
                    result.stopped_early = True
                    bar.write(f"early stop: no val {metric} gain for {waited} epochs")
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    return result
