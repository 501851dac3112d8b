"""The statistics the MAE loss standardises its target with (docs/DESIGN.md section 2; the
choice of `loss.target_norm` is explained in loss.py).

They come from the VISIBLE patches of the target view only. The loss de-standardises the
prediction with them to take the spectral angle in physical units, so they are an input of the
prediction side: statistics over the whole tile would hand the prediction of the hidden patches
the hidden region's mean spectrum (`target_norm: band`) or its mean and spread (`sample`).
With visible-patch statistics, changing a hidden target pixel changes nothing the prediction
is computed from; only the target side of the loss moves.

Letters: b batch, c bands, n patches, n_keep visible patches, p patch pixels (k*k).
"""
from __future__ import annotations

import torch
from torch import Tensor

from specaware.model.conditioning import band_scale, band_statistics
from specaware.model.masking import gather_patches


def pooled_statistics(stats: dict[str, Tensor], band_mask: Tensor) -> dict[str, Tensor]:
    """`band_statistics` pooled over the real bands: one mean and std per sample (of every valid
    pixel of every real band), repeated per band [b, c] so the same code (de)standardises with
    them. Standardising with these keeps the spectrum's shape: band i stays brighter than band j."""
    weight = stats["valid_frac"] * band_mask.to(stats["mean"].dtype)           # pixel counts
    total = weight.sum(1, keepdim=True).clamp_min(1e-12)
    mean = (weight * stats["mean"]).sum(1, keepdim=True) / total
    var = (weight * (stats["std"].square() + (stats["mean"] - mean).square())).sum(
        1, keepdim=True) / total
    return {**stats, "mean": mean.expand_as(stats["mean"]),
            "std": var.sqrt().expand_as(stats["std"])}


def destandardise(x: Tensor, stats: dict[str, Tensor]) -> Tensor:
    """Inverse of `conditioning.standardise` (at valid pixels): x [b, c, n, p] -> units of the
    statistics."""
    mean, std = band_scale(stats)
    return torch.addcmul(mean, x, std)                         # one pass over x


@torch.no_grad()
def target_statistics(target, keep: Tensor | None, target_norm: str,
                      visible: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Mean and std [b, c] of the target view (`BandInputs`) over the valid pixels of its
    visible patches keep [b, n_keep] (None: every patch, for inference), per `target_norm`.

    `visible`: `band_statistics` of exactly those pixels when the caller has them already (the
    encoder's, when the target is the input view). In "band" mode a real band without a valid
    visible pixel takes the pooled statistics, so it is not divided by a floor of 1 % of the
    brightness."""
    if visible is None:
        patches, valid = target.patches, target.valid
        if keep is not None:
            patches, valid = gather_patches(patches, keep), gather_patches(valid, keep)
        visible = band_statistics(patches, valid, target.band_mask, zeroed=True)
    pooled = pooled_statistics(visible, target.band_mask)
    if target_norm == "sample":
        return pooled
    if target_norm != "band":
        raise ValueError(f"config key 'loss.target_norm': {target_norm!r} is not 'sample' "
                         f"or 'band'")
    seen = (visible["valid_frac"] > 0) | ~target.band_mask      # padding keeps mean 0
    return {**visible, "mean": torch.where(seen, visible["mean"], pooled["mean"]),
            "std": torch.where(seen, visible["std"], pooled["std"])}
