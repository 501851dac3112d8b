"""Pieces every head shares: freezing the encoder and padding a batch to whole patches.

Freeze modes say what is frozen: `none` (every encoder weight trains), `encoder` (no encoder
weight trains: a linear probe / frozen-feature decoder), `partial` (all but the last K blocks
frozen), `lora` (encoder frozen, low-rank adapters on it train; finetune/lora.py). The old
spellings `full` (= none) and `frozen` (= encoder) still work and log a deprecation warning:
`freeze: full` read as "fully frozen" while it meant "all trainable".

Letters: b batch, c bands, d width, h w token grid, H W pixels, k patch size.
"""
from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)
Freeze = Literal["none", "encoder", "partial", "lora", "full", "frozen"]
FREEZE_MODES = ("none", "encoder", "partial", "lora")
DEPRECATED_FREEZE = {"full": "none", "frozen": "encoder"}


def canonical_freeze(mode: str, key: str = "model.freeze") -> str:
    """The current name of a freeze mode; an old spelling logs a deprecation warning."""
    if mode in DEPRECATED_FREEZE:
        new = DEPRECATED_FREEZE[mode]
        log.warning("DeprecationWarning: %s=%s is read as %s=%s (%s); write %s: %s", key, mode,
                    key, new, "every encoder weight trains" if new == "none" else
                    "no encoder weight trains", key, new)
        return new
    if mode not in FREEZE_MODES:
        raise ValueError(f"freeze mode {mode!r} is not one of {', '.join(FREEZE_MODES)} "
                         "(none = all trainable, encoder = encoder frozen)")
    return mode


def set_trainable(encoder: nn.Module, mode: Freeze, last_k: int = 1) -> str:
    """`encoder`/`lora`: no encoder weight trains (LoRA adds its own trainable adapters later);
    `partial`: only the last `last_k` blocks and the final norm; `none`: everything. Raises if
    `partial` meets an encoder without blocks. Returns the canonical mode name."""
    mode = canonical_freeze(mode)
    for p in encoder.parameters():
        p.requires_grad_(mode == "none")
    if mode != "partial":
        return mode
    blocks = getattr(encoder, "blocks", None)
    if blocks is None or not isinstance(blocks, nn.ModuleList):
        raise ValueError("freeze=partial needs `encoder.blocks` (a ModuleList of transformer "
                         "blocks); use freeze=none or freeze=encoder for this encoder")
    if not 1 <= last_k <= len(blocks):
        raise ValueError(f"trainable_blocks={last_k} is outside 1..{len(blocks)} (encoder depth)")
    for block in list(blocks)[-last_k:]:
        block.requires_grad_(True)
    norm = getattr(encoder, "norm", None)
    if isinstance(norm, nn.Module):
        norm.requires_grad_(True)
    return mode


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
    valid = batch.get("valid")
    if valid is None:        # the padding must be invalid, not black pixels in the statistics
        image = batch["image"]
        valid = torch.ones(image.shape[0], H, W, dtype=torch.bool, device=image.device)
    out["valid"] = F.pad(torch.as_tensor(valid).bool(), (0, pw, 0, ph), value=False)
    return out, (H, W)


def real_patch_fraction(H: int, W: int, k: int, device=None) -> torch.Tensor:
    """[n] share of each patch's k*k pixels inside the original H x W (the rest is padding
    from `pad_to_patches`), patches row-major over the padded grid."""
    rows = (torch.arange(-(-H // k) * k, device=device) < H).float()
    cols = (torch.arange(-(-W // k) * k, device=device) < W).float()
    per_row = rows.reshape(-1, k).mean(1)                                    # [h]
    per_col = cols.reshape(-1, k).mean(1)                                    # [w]
    return (per_row[:, None] * per_col[None, :]).flatten()


class FrozenAwareModule(nn.Module):
    """Keeps a fully frozen encoder in eval mode (no dropout/statistics drift) while training."""

    encoder: nn.Module
    freeze: str

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze == "encoder":
            self.encoder.eval()
        return self


def forward_intermediates(encoder: nn.Module, batch: dict, indices: list[int],
                          frozen: bool) -> list[torch.Tensor]:
    """Encoder feature maps [b, d, h, w] at `indices`; no autograd graph when frozen."""
    with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
        return encoder.forward_intermediates(batch, indices)
