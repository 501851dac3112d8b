"""Pieces every head shares: freezing the encoder and padding a batch to whole patches.

Letters: b batch, c bands, d width, h w token grid, H W pixels, k patch size.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Freeze = Literal["frozen", "partial", "full"]


def set_trainable(encoder: nn.Module, mode: Freeze, last_k: int = 1) -> None:
    """`frozen`: no encoder weight trains (linear probe); `partial`: only the last `last_k` blocks
    and the final norm; `full`: everything. Raises if `partial` meets an encoder without blocks."""
    if mode not in ("frozen", "partial", "full"):
        raise ValueError(f"freeze mode {mode!r} is not one of frozen, partial, full")
    for p in encoder.parameters():
        p.requires_grad_(mode == "full")
    if mode != "partial":
        return
    blocks = getattr(encoder, "blocks", None)
    if blocks is None or not isinstance(blocks, nn.ModuleList):
        raise ValueError("freeze=partial needs `encoder.blocks` (a ModuleList of transformer "
                         "blocks); use freeze=full or freeze=frozen for this encoder")
    if not 1 <= last_k <= len(blocks):
        raise ValueError(f"trainable_blocks={last_k} is outside 1..{len(blocks)} (encoder depth)")
    for block in list(blocks)[-last_k:]:
        block.requires_grad_(True)
    norm = getattr(encoder, "norm", None)
    if isinstance(norm, nn.Module):
        norm.requires_grad_(True)


def default_indices(depth: int, levels: int = 4) -> list[int]:
    """Evenly spaced block indices ending at the last block, e.g. depth 12 -> [2, 5, 8, 11]."""
    picked = sorted({max(0, round((i + 1) * depth / levels) - 1) for i in range(levels)})
    return picked


def pad_to_patches(batch: dict, k: int) -> tuple[dict, tuple[int, int]]:
    """Zero-pad `image` (and mark `valid` False) on the bottom/right so H and W divide by `k`.

    Returns the padded batch (a shallow copy) and the original (H, W) to crop logits back to.
    """
    H, W = batch["image"].shape[-2:]
    ph, pw = (-H) % k, (-W) % k
    if ph == 0 and pw == 0:
        return batch, (H, W)
    out = dict(batch)
    out["image"] = F.pad(batch["image"], (0, pw, 0, ph))
    if "valid" in batch and batch["valid"] is not None:
        out["valid"] = F.pad(batch["valid"], (0, pw, 0, ph), value=False)
    return out, (H, W)


class FrozenAwareModule(nn.Module):
    """Keeps a fully frozen encoder in eval mode (no dropout/statistics drift) while training."""

    encoder: nn.Module
    freeze: str

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze == "frozen":
            self.encoder.eval()
        return self


def forward_intermediates(encoder: nn.Module, batch: dict, indices: list[int],
                          frozen: bool) -> list[torch.Tensor]:
    """Encoder feature maps [b, d, h, w] at `indices`; no autograd graph when frozen."""
    with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
        return encoder.forward_intermediates(batch, indices)
