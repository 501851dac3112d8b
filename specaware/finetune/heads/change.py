"""Change detection: one (siamese, shared-weight) encoder reads both dates, which may come from
different sensors with different band sets, features are fused per level (absolute difference,
concatenation, or both) and decoded into a change map (docs/DESIGN.md section 5).

Classes: binary (0 no change, 1 change) or multi-class (0 no change, 1..K-1 change types).
Letters: b batch, d width, h w token grid, H W pixels, K classes.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from specaware.finetune.heads.common import (FrozenAwareModule, Freeze, default_indices,
                                             forward_intermediates, pad_to_patches, set_trainable)
from specaware.finetune.heads.decoder import UPerDecoder

Fusion = Literal["diff", "concat", "both"]
_FUSION_WIDTH = {"diff": 1, "concat": 2, "both": 3}


def fuse(f1: torch.Tensor, f2: torch.Tensor, mode: Fusion) -> torch.Tensor:
    """Two maps [b, d, h, w] -> [b, m*d, h, w], m = 1 (diff), 2 (concat), 3 (both)."""
    if mode == "diff":
        return (f1 - f2).abs()
    if mode == "concat":
        return torch.cat([f1, f2], dim=1)
    return torch.cat([(f1 - f2).abs(), f1, f2], dim=1)


class ChangeDetector(FrozenAwareModule):
    """(batch t1, batch t2) -> logits [b, K, H, W]; t1/t2 share H, W (co-registered), not bands."""

    def __init__(self, encoder: nn.Module, num_classes: int = 2, fusion: Fusion = "diff",
                 indices: list[int] | None = None, width: int = 64, freeze: Freeze = "none",
                 trainable_blocks: int = 1):
        super().__init__()
        if fusion not in _FUSION_WIDTH:
            raise ValueError(f"fusion {fusion!r} is not one of {list(_FUSION_WIDTH)}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.encoder, self.freeze, self.fusion = encoder, freeze, fusion
        self.indices = list(indices) if indices else default_indices(encoder.depth)
        self.freeze = set_trainable(encoder, freeze, trainable_blocks)
        d = encoder.embed_dim
        self.project = nn.ModuleList(nn.Conv2d(_FUSION_WIDTH[fusion] * d, d, 1)
                                     for _ in self.indices)
        self.decoder = UPerDecoder(d, len(self.indices), num_classes, width)

    def forward(self, t1: dict, t2: dict) -> torch.Tensor:
        if t1["image"].shape[-2:] != t2["image"].shape[-2:]:
            raise ValueError(f"t1 {tuple(t1['image'].shape[-2:])} and t2 "
                             f"{tuple(t2['image'].shape[-2:])} differ in size: co-register and "
                             "crop both dates to the same grid first")
        k = self.encoder.patch_size
        (t1, (H, W)), (t2, _) = pad_to_patches(t1, k), pad_to_patches(t2, k)
        frozen = self.freeze == "encoder"
        f1 = forward_intermediates(self.encoder, t1, self.indices, frozen)
        f2 = forward_intermediates(self.encoder, t2, self.indices, frozen)
        fused = [proj(fuse(a, b, self.fusion)) for proj, a, b in zip(self.project, f1, f2)]
        logits = F.interpolate(self.decoder(fused), size=t1["image"].shape[-2:], mode="bilinear",
                               align_corners=False)
        return logits[..., :H, :W]
