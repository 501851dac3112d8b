"""Scene (or pixel-patch) classification on a pretrained encoder (docs/DESIGN.md section 5).

Tokens from `encoder.forward_features` are pooled (mean over the patches, each weighted by its
share of real pixels so the padding `pad_to_patches` adds weighs nothing, or the patch holding
the centre pixel, which is what pixel-wise benchmark classification wants) and classified by a
linear layer (linear probe when the encoder is frozen) or a small MLP.

Letters: b batch, n tokens, d width, K classes.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from specaware.finetune.heads.common import (FrozenAwareModule, Freeze, pad_to_patches,
                                             real_patch_fraction, set_trainable)


class SceneClassifier(FrozenAwareModule):
    """batch dict (INTERFACES.md "A batch") -> logits [b, K]."""

    def __init__(self, encoder: nn.Module, num_classes: int,
                 head: Literal["linear", "mlp"] = "linear",
                 pool: Literal["mean", "center"] = "mean", freeze: Freeze = "none",
                 trainable_blocks: int = 1, hidden: int = 256, dropout: float = 0.0):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if pool not in ("mean", "center"):
            raise ValueError(f"pool {pool!r} is not one of mean, center")
        self.encoder, self.freeze, self.pool = encoder, freeze, pool
        self.freeze = set_trainable(encoder, freeze, trainable_blocks)
        d = encoder.embed_dim
        if head == "linear":
            self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, num_classes))
        elif head == "mlp":
            self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, hidden), nn.GELU(),
                                      nn.Dropout(dropout), nn.Linear(hidden, num_classes))
        else:
            raise ValueError(f"head {head!r} is not one of linear, mlp")

    def forward(self, batch: dict) -> torch.Tensor:
        k = self.encoder.patch_size
        batch, (H, W) = pad_to_patches(batch, k)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.freeze != "encoder"):
            tokens = self.encoder.forward_features(batch)             # [b, n, d]
        return self.head(self.pooled(tokens, H, W, batch["image"].shape[-1] // k))

    def pooled(self, tokens: torch.Tensor, H: int, W: int, grid_w: int) -> torch.Tensor:
        """[b, n, d] -> [b, d]: mean of the tokens weighted by their share of real (unpadded)
        pixels, or the token that holds pixel (H/2, W/2)."""
        if self.pool == "mean":
            k = self.encoder.patch_size
            weight = real_patch_fraction(H, W, k, tokens.device).to(tokens.dtype)     # [n]
            return torch.einsum("bnd,n->bd", tokens, weight / weight.sum())
        k = self.encoder.patch_size
        index = ((H // 2) // k) * grid_w + (W // 2) // k
        return tokens[:, index]
