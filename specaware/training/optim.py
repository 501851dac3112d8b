"""The pretraining optimizer: torch AdamW over `specaware.optim.groups.param_groups`.

A torch optimizer is handed to DeepSpeed on purpose: its own Adam would JIT-build a C++ op at
start-up (docs/DESIGN.md section 4, "Optimisation"). Which parameters decay is decided once, for
pretraining and fine-tuning alike, in specaware/optim/groups.py.
"""
from __future__ import annotations

import torch
from torch import nn

from specaware.optim.groups import param_groups

__all__ = ["make_optimizer", "group_layout"]


def make_optimizer(model: nn.Module, optim_cfg, split=None) -> torch.optim.AdamW:
    """torch AdamW at the peak lr (the scheduler scales it); fused=False keeps it CPU-safe.
    `split(groups) -> groups` may rearrange the groups first (expert_parallel.split_param_groups
    puts expert weights in groups of their own)."""
    groups = param_groups(model, lr=optim_cfg.lr, weight_decay=optim_cfg.weight_decay)
    return torch.optim.AdamW(split(groups) if split else groups, lr=optim_cfg.lr,
                             betas=tuple(optim_cfg.betas), eps=optim_cfg.eps)


def group_layout(model: nn.Module, optim_cfg, split=None) -> list[dict]:
    """[{"name", "tensors", "elements"}] of the groups `make_optimizer` builds for `model`, in
    order: what a checkpoint's optimizer state must match to be loaded into this run. It is
    stored with every checkpoint (trainer_state.json "optimizer_groups") and compared on resume,
    so a checkpoint from another grouping rule, model or setting fails with both layouts named
    instead of inside DeepSpeed."""
    groups = param_groups(model, lr=optim_cfg.lr, weight_decay=optim_cfg.weight_decay)
    return [{"name": str(g.get("name", i)), "tensors": len(g["params"]),
             "elements": sum(p.numel() for p in g["params"])}
            for i, g in enumerate(split(groups) if split else groups)]
