"""Semantic segmentation: multi-level encoder features -> UPerNet-style decoder -> per-pixel
logits at the input resolution (docs/DESIGN.md section 5).

Letters: b batch, d width, h w token grid, H W pixels, K classes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from specaware.finetune.heads.common import (FrozenAwareModule, Freeze, default_indices,
                                             forward_intermediates, pad_to_patches, set_trainable)
from specaware.finetune.heads.decoder import UPerDecoder


class Segmenter(FrozenAwareModule):
    """batch dict -> logits [b, K, H, W] (H, W of the input, any size: padded to whole patches)."""

    def __init__(self, encoder: nn.Module, num_classes: int, indices: list[int] | None = None,
                 width: int = 64, freeze: Freeze = "none", trainable_blocks: int = 1):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.encoder, self.freeze = encoder, freeze
        self.indices = list(indices) if indices else default_indices(encoder.depth)
        if max(self.indices) >= encoder.depth or min(self.indices) < 0:
            raise ValueError(f"indices {self.indices} outside the encoder's 0..{encoder.depth - 1}")
        self.freeze = set_trainable(encoder, freeze, trainable_blocks)
        self.decoder = UPerDecoder(encoder.embed_dim, len(self.indices), num_classes, width)

    def forward(self, batch: dict) -> torch.Tensor:
        batch, (H, W) = pad_to_patches(batch, self.encoder.patch_size)
        feats = forward_intermediates(self.encoder, batch, self.indices, self.freeze == "encoder")
        logits = self.decoder(feats)                                   # [b, K, h*s, w*s]
        logits = F.interpolate(logits, size=batch["image"].shape[-2:], mode="bilinear",
                               align_corners=False)
        return logits[..., :H, :W]
