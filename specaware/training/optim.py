"""The pretraining optimizer: torch AdamW over `specaware.optim.groups.param_groups`.

A torch optimizer is handed to DeepSpeed on purpose: its own Adam would JIT-build a C++ op at
start-up (docs/DESIGN.md section 4, "Optimisation"). Which parameters decay is decided once, for
pretraining and fine-tuning alike, in specaware/optim/groups.py.
"""
from __future__ import annotations

import torch
from torch import nn

from specaware.optim.groups import param_groups

__all__ = ["make_optimizer"]


def make_optimizer(model: nn.Module, optim_cfg, split=None) -> torch.optim.AdamW:
    """torch AdamW at the peak lr (the scheduler scales it); fused=False keeps it CPU-safe.
    `split(groups) -> groups` may rearrange the groups first (expert_parallel.split_param_groups
    puts expert weights in groups of their own)."""
    groups = param_groups(model, lr=optim_cfg.lr, weight_decay=optim_cfg.weight_decay)
    return torch.optim.AdamW(split(groups) if split else groups, lr=optim_cfg.lr,
                             betas=tuple(optim_cfg.betas), eps=optim_cfg.eps)
