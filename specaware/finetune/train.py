"""The plain fine-tuning loop: AdamW (lower learning rate for encoder weights; no decay on biases,
norms, embedding tables and normalised router weights: specaware/optim/groups.py), the
warmup + cosine schedule of pretraining (specaware/optim/schedule.py, floor 0), validation
every epoch, early stopping on the task's headline metric (OA / mIoU / change kappa: unlike F1, kappa gives a constant all-change map 0),
best weights kept and saved as safetensors. `class_weight=balanced` weights the loss by inverse
class frequency (change maps are mostly "no change").

`FitOptions` adds bf16 autocast (precision.py), data parallelism over torchrun's processes
(distributed.py: losses normalised by the global labelled count, confusion matrices summed),
an epoch checkpoint after every epoch for `--resume auto` (resume.py) and rank-0 tracking
(tracking.py).

Losses ignore unlabelled targets (-1). Batches follow INTERFACES.md "A batch"; change batches
are {"t1": batch, "t2": batch, "label": [B, H, W]}.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from specaware.data.collate import to_device
from specaware.finetune.config import OptimConfig
from specaware.finetune.distributed import DistEnv, all_have_batch, all_sum, unwrap, wrap
from specaware.finetune.metrics import HEADLINE, confusion_matrix, task_metrics
from specaware.finetune.precision import autocast, check_precision
from specaware.finetune.resume import EarlyStop, latest, load_epoch, rng_state, save_epoch
from specaware.faults import fault_point
from specaware.optim.groups import param_groups
from specaware.optim.schedule import make_scheduler

log = logging.getLogger(__name__)
IGNORE = -1
BEST_STATE = "best_trainable.safetensors"   # in the epoch-checkpoint folder, for resume


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


@torch.no_grad()
def evaluate(model: nn.Module, loader, task: str, num_classes: int, device: torch.device,
             precision: str = "fp32", env: DistEnv | None = None) -> tuple[np.ndarray, dict]:
    """Confusion matrix [K, K] over the loader and the task's metrics. Under several processes
    each rank counts its own samples and the matrices are summed, so the metrics are exactly
    those of one process over all the data (never an average of per-rank accuracies)."""
    model = unwrap(model)
    model.eval()
    cm = torch.zeros((num_classes, num_classes), dtype=torch.int64)
    for batch in loader:
        batch = to_device(batch, device)
        with autocast(precision, device):
            logits, labels = logits_and_labels(model, batch, task)
        cm += torch.from_numpy(confusion_matrix(logits.float().argmax(1), labels, num_classes,
                                                IGNORE))
    if env is not None and env.active:
        cm = all_sum(cm.to(env.device), env).cpu()
    cm = cm.numpy()
    return cm, task_metrics(cm, task)


def class_weights(loader, task: str, num_classes: int, max_batches: int = 200,
                  env: DistEnv | None = None) -> torch.Tensor:
    """Inverse-frequency weights [K] (mean 1 over the classes present) from the labels of up to
    `max_batches` training batches (of every rank). Change maps are mostly "no change";
    unweighted cross-entropy then sits in the all-no-change minimum for many epochs."""
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        labels = batch["label"].reshape(-1)
        labels = labels[labels != IGNORE]
        counts += torch.bincount(labels, minlength=num_classes)[:num_classes].double()
    if env is not None and env.active:
        counts = all_sum(counts.to(env.device), env).cpu()
    present = counts > 0
    weights = torch.zeros(num_classes, dtype=torch.float64)
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    log.info("class weights (%s): %s", task, [round(float(w), 3) for w in weights])
    return weights.float()


def global_mean_loss(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None,
                     env: DistEnv | None) -> tuple[torch.Tensor, float, float]:
    """Cross-entropy (fp32) averaged over the labelled targets of all ranks.

    Returns (loss to back-propagate, global mean loss, global labelled-target weight). The
    local sum is divided by the global count and multiplied by the world size, so DDP's
    gradient average equals the gradient of one process holding the whole global batch even
    when ranks hold different numbers of labelled pixels.
    """
    per = F.cross_entropy(logits.float(), labels, weight=weight, ignore_index=IGNORE,
                          reduction="none")
    keep = (labels != IGNORE).float()
    w = keep if weight is None else weight[labels.clamp(min=0)] * keep
    local = torch.stack([per.sum().detach(), w.sum()])
    total = all_sum(local, env)
    world = env.world_size if env is not None else 1
    denom = total[1].clamp(min=1e-12)
    return per.sum() / denom * world, float(total[0] / denom), float(total[1])


@dataclass
class FitOptions:
    """What a run adds to the plain loop: precision, processes, epoch checkpoints, tracking."""
    precision: str = "fp32"
    env: DistEnv | None = None
    state_dir: Path | None = None     # epoch checkpoints for --resume (None: none written)
    resume: bool = False              # continue from the newest epoch checkpoint in state_dir
    tracker: object | None = None     # FinetuneTracker (rank 0 logs)


def _train_epoch(model, loader, optimizer, scheduler, cfg: OptimConfig, task: str, device,
                 bar, weight: torch.Tensor | None, opts: FitOptions) -> tuple[float, int]:
    """One pass; returns (mean loss over steps, samples seen by this rank)."""
    model.train()
    total, count, samples = 0.0, 0, 0
    batches = iter(loader)
    for step in itertools.count():
        if cfg.max_steps_per_epoch and step >= cfg.max_steps_per_epoch:
            break
        batch = next(batches, None)
        if not all_have_batch(batch is not None, opts.env):
            break
        batch = to_device(batch, device)
        with autocast(opts.precision, device):
            logits, labels = logits_and_labels(model, batch, task)
        loss, value, labelled = global_mean_loss(logits, labels, weight, opts.env)
        if labelled == 0:   # no rank holds a labelled target: every rank skips together
            continue
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        total, count, samples = total + value, count + 1, samples + len(labels)
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}")
    return total / max(count, 1), samples


def _optimizer(model: nn.Module, train_loader, cfg: OptimConfig):
    """AdamW over the trainable parameter groups, its schedule, and steps per epoch."""
    params = param_groups(model, lr=cfg.lr, weight_decay=cfg.weight_decay,
                          encoder_lr=cfg.encoder_lr)
    if cfg.prompt_lr is not None:
        params = prompt_group(params, cfg.prompt_lr)
    if not params:
        raise ValueError("nothing to train: every parameter is frozen")
    optimizer = torch.optim.AdamW(params)
    steps = len(train_loader) if cfg.max_steps_per_epoch == 0 else min(
        len(train_loader), cfg.max_steps_per_epoch)
    total = steps * cfg.epochs
    scheduler = make_scheduler(optimizer, total_steps=total, peak=cfg.lr,
                               warmup_steps=max(1, int(total * cfg.warmup_fraction)))
    return optimizer, scheduler, steps


def prompt_group(groups: list[dict], lr: float) -> list[dict]:
    """`groups` with the prompt tokens (`prompt_tokens.*`, prompt_tuning.py) moved to their own
    group "prompt" at `lr`, weight decay as their group had."""
    out, tokens = [], {"name": "prompt", "params": [], "names": [], "lr": lr}
    for group in groups:
        moved = [i for i, n in enumerate(group["names"]) if n.startswith("prompt_tokens.")]
        if moved:
            tokens["weight_decay"] = group["weight_decay"]
            tokens["params"] += [group["params"][i] for i in moved]
            tokens["names"] += [group["names"][i] for i in moved]
        keep = [i for i in range(len(group["names"])) if i not in moved]
        if keep:
            out.append({**group, "params": [group["params"][i] for i in keep],
                        "names": [group["names"][i] for i in keep]})
    return out + ([tokens] if tokens["params"] else [])


def fit(model: nn.Module, train_loader, val_loader, task: str, num_classes: int,
        cfg: OptimConfig, device: torch.device, progress: bool = True,
        on_best: Callable[[nn.Module, int, dict], None] | None = None,
        options: FitOptions | None = None) -> FitResult:
    """Train with early stopping; the model ends holding its best-validation weights.

    `on_best(model, epoch, val_metrics)` is called on rank 0 at each new best (e.g. to save a
    checkpoint). `options` adds bf16, DDP over torchrun's processes, epoch checkpoints with
    resume, and tracking (FitOptions).
    """
    opts = options or FitOptions()
    env = opts.env or DistEnv(device=device)
    opts = dataclasses.replace(opts, env=env)
    model.to(device)
    check_precision(opts.precision, device)
    optimizer, scheduler, steps = _optimizer(model, train_loader, cfg)
    weight = (class_weights(train_loader, task, num_classes, env=env).to(device)
              if cfg.class_weight == "balanced" else None)
    stop, best = _start(model, optimizer, scheduler, opts)
    trained = wrap(model, env)
    with tqdm(total=steps * cfg.epochs, initial=steps * stop.next_epoch,
              disable=None if progress and env.is_main else True,
              desc=f"finetune {task}", dynamic_ncols=True) as bar:
        for epoch in range(stop.next_epoch, cfg.epochs):
            if stop.waited >= cfg.patience:
                break
            _set_epoch(train_loader, epoch)
            began = time.perf_counter()
            loss, samples = _train_epoch(trained, train_loader, optimizer, scheduler, cfg, task,
                                         device, bar, weight, opts)
            rate = samples * env.world_size / max(time.perf_counter() - began, 1e-9)
            cm, val = evaluate(model, val_loader, task, num_classes, device, opts.precision, env)
            best = _after_epoch(model, epoch, loss, cm, val, stop, best, bar, on_best, opts,
                                task, val_loader, device)
            _track(opts, scheduler, steps * (epoch + 1), epoch, loss, rate, cm, val, model,
                   val_loader, task, device)
            _save_state(model, optimizer, scheduler, stop, opts, epoch)
            if stop.waited >= cfg.patience:
                bar.write(f"early stop: no val {HEADLINE[task]} gain for {stop.waited} epochs")
    if best is not None:
        model.load_state_dict(best, strict=False)
    return FitResult(stop.best_epoch, stop.best_score, stop.history,
                     stop.waited >= cfg.patience)


def _trainable_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k not in frozen}


def _start(model, optimizer, scheduler, opts: FitOptions) -> tuple[EarlyStop, dict | None]:
    """Fresh early-stopping state, or the newest epoch checkpoint's (and its best weights)."""
    stem = latest(opts.state_dir) if opts.resume and opts.state_dir is not None else None
    if stem is None:
        return EarlyStop(), None
    stop = load_epoch(stem, model, optimizer, scheduler, opts.env.rank)
    best_file = opts.state_dir / BEST_STATE
    best = load_file(str(best_file), device=str(next(model.parameters()).device)) \
        if stop.best_epoch >= 0 and best_file.is_file() else None
    return stop, best


def _set_epoch(loader, epoch: int) -> None:
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


def _after_epoch(model, epoch: int, loss: float, cm, val: dict, stop: EarlyStop, best,
                 bar, on_best, opts: FitOptions, task: str, val_loader, device):
    """Early-stopping bookkeeping; a new best is kept in memory and saved on rank 0."""
    metric = HEADLINE[task]
    score = val[metric] if not math.isnan(val[metric]) else -math.inf
    stop.history.append({"epoch": epoch, "loss": loss, f"val_{metric}": val[metric]})
    stop.next_epoch = epoch + 1
    if opts.env.is_main:
        bar.write(f"epoch {epoch}: loss {loss:.4f}  val {metric} {val[metric]:.4f}")
    if score <= stop.best_score:
        stop.waited += 1
        return best
    stop.best_epoch, stop.best_score, stop.waited = epoch, score, 0
    best = _trainable_copy(model)
    if opts.env.is_main:
        if on_best is not None:
            on_best(model, epoch, val)
        if opts.state_dir is not None:
            opts.state_dir.mkdir(parents=True, exist_ok=True)
            save_file({k: v.cpu().contiguous() for k, v in best.items()},
                      str(opts.state_dir / BEST_STATE))
    return best


def _save_state(model, optimizer, scheduler, stop: EarlyStop, opts: FitOptions,
                epoch: int) -> None:
    """Epoch checkpoint (every rank's RNG gathered to rank 0), then the `epoch:N` fault point
    of the kill-and-resume test."""
    if opts.state_dir is None:
        return
    rng = rng_state()
    rngs = [rng]
    if opts.env.active:
        import torch.distributed as dist
        rngs = [None] * opts.env.world_size
        dist.all_gather_object(rngs, rng)
    if opts.env.is_main:
        save_epoch(opts.state_dir, epoch, model, optimizer, scheduler, stop, rngs)
    fault_point("epoch", epoch)


@torch.no_grad()
def _example(model, loader, task: str, device, precision: str):
    """(reference, prediction) [H, W] of the first validation tile of a dense task."""
    if task == "classification":
        return None
    with torch.random.fork_rng(devices=[]):   # a DataLoader draws its seed: training unchanged
        batch = next(iter(loader), None)
    if batch is None:
        return None
    model = unwrap(model).eval()
    with autocast(precision, device):
        logits, labels = logits_and_labels(model, to_device(batch, device), task)
    return labels[0].cpu().numpy(), logits[0].float().argmax(0).cpu().numpy()


def _track(opts: FitOptions, scheduler, step: int, epoch: int, loss: float, rate: float,
           cm, val: dict, model, val_loader, task: str, device) -> None:
    tracker = opts.tracker
    if tracker is None or not opts.env.is_main:
        return
    lrs = {}      # the groups' current rates, named by specaware.optim.groups (head_*, encoder_*)
    for group in scheduler.optimizer.param_groups:
        key = "encoder_lr" if str(group.get("name", "")).startswith("encoder") else "lr"
        lrs.setdefault(key, float(group["lr"]))
    tracker.epoch(step, epoch, loss, lrs, val, rate)
    if tracker.wants_images:
        tracker.images(step, epoch, cm, val, _example(model, val_loader, task, device,
                                                      opts.precision))
