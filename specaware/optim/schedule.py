"""Learning-rate schedule of pretraining and fine-tuning: linear warmup to the peak, then cosine
decay to a floor (docs/DESIGN.md section 4, "Optimisation").

The schedule is a picklable callable (not a lambda) so `LambdaLR.state_dict()` carries it and a
resumed run continues on the same curve.
"""
from __future__ import annotations

import math

import torch

__all__ = ["WarmupCosine", "lr_at", "make_scheduler"]


def lr_at(step: int, *, peak: float, floor: float, warmup: int, total: int) -> float:
    """Learning rate for optimizer step `step` (0-based).

    Steps 0..warmup-1 rise linearly from peak/warmup to peak (never exactly 0, so the first
    step moves the weights); then cosine from peak at `warmup` to `floor` at `total`; `floor`
    after that.
    """
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Multiplicative factor for `torch.optim.lr_scheduler.LambdaLR` (base lr = peak)."""

    def __init__(self, *, peak: float, floor: float, warmup: int, total: int):
        self.peak, self.floor, self.warmup, self.total = peak, floor, warmup, total

    def __call__(self, step: int) -> float:
        lr = lr_at(step, peak=self.peak, floor=self.floor, warmup=self.warmup, total=self.total)
        return lr / self.peak


def make_scheduler(optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int,
                   peak: float, floor: float = 0.0):
    """LambdaLR over every param group: each group's own `lr` is its peak, scaled by the
    warmup-cosine factor of (`peak`, `floor`); with floor 0 the factor is the same for any
    peak, so groups with different learning rates (encoder vs head) share one curve."""
    factor = WarmupCosine(peak=peak, floor=floor, warmup=warmup_steps, total=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
