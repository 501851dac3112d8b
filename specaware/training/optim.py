"""AdamW with no-decay parameter groups.

A torch optimizer is handed to DeepSpeed on purpose: its own Adam would JIT-build a C++ op at
start-up (DESIGN.md section 4). Weight decay shrinks weights toward 0, which is wrong for
biases, normalisation gains, learned tokens and position/embedding tables: they go to a group
with weight_decay 0.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["param_groups", "make_optimizer", "NO_DECAY_NAMES"]

# Name fragments of parameters that never decay (besides every 1-d parameter).
NO_DECAY_NAMES = ("pos_embed", "cls_token", "mask_token", "sensor_embed", "level_embed",
                  "embedding", "scale")


def _no_decay(name: str, param: torch.Tensor) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return param.ndim <= 1 or leaf == "bias" or any(k in name for k in NO_DECAY_NAMES)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups, trainable parameters only, in a stable (named) order.

    Returns [{"params", "weight_decay", "names"}, ...]; "names" lets tests and logs say which
    tensors went where (torch ignores unknown group keys).
    """
    decay, keep = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (keep if _no_decay(name, p) else decay).append((name, p))
    groups = [
        {"params": [p for _, p in decay], "weight_decay": weight_decay,
         "names": [n for n, _ in decay]},
        {"params": [p for _, p in keep], "weight_decay": 0.0, "names": [n for n, _ in keep]},
    ]
    return [g for g in groups if g["params"]]


def make_optimizer(model: nn.Module, optim_cfg, split=None) -> torch.optim.AdamW:
    """torch AdamW at the peak lr (the scheduler scales it); fused=False keeps it CPU-safe.
    `split(groups) -> groups` may rearrange the groups first (expert_parallel.split_param_groups
    puts expert weights in groups of their own)."""
    groups = param_groups(model, optim_cfg.weight_decay)
    return torch.optim.AdamW(split(groups) if split else groups, lr=optim_cfg.lr,
                             betas=tuple(optim_cfg.betas), eps=optim_cfg.eps)
