"""Reconstruction loss of the masked autoencoder (docs/DESIGN.md section 2; CSMoE/SpecAware MAE).

Counted only where the encoder saw nothing (masked patches) AND the target has a real value
(valid pixel of a real band); invalid pixels and padded bands contribute exactly nothing.

Target normalisation (our choice, `loss.target_norm`), per sample from the valid pixels of the
target view's VISIBLE patches (target_norm.py: statistics of hidden pixels would reach the
prediction through the de-standardisation below; std floored at 1% of the sample brightness,
`conditioning.band_scale`):
  "sample" (default) one mean and std over all real bands (`target_norm.pooled_statistics`):
           the target keeps the spectrum's shape, which the model has to carry from the visible
           patches;
  "band"   each band by its own mean and std: balances bright and dark bands, but the mean
           spectrum of the visible patches is handed to the prediction, so only the spatial
           deviations from it are left to learn; on tiles that are mostly one cover these are
           close to noise (demo shards, whole-tile statistics: predicting 0 scores 0.777, the
           best spatial interpolation 0.745), and the demo's downstream results fell from 40 to
           29 % OA, 21 to 13 % mIoU with it.
Using the target's own statistics is legitimate for an objective (MAE's per-patch
`norm_pix_loss` does the same) and is independent of L1 radiance vs L2 reflectance scaling.
The head predicts in these standardised units.
  - pixel term: Charbonnier sqrt(diff^2 + eps^2) or MSE on standardised values;
  - spectral term: spectral angle, 1 - cos(pred, target) over the valid bands of each pixel,
    computed in PHYSICAL units (prediction de-standardised with the same statistics), where the
    angle has its usual meaning for reflectance/radiance spectra. Pixels whose target spectrum is
    all zero have no angle and are skipped.
Both parts are returned separately; the total is their weighted sum. Computed in float32, in
one autograd node (`fused_loss.FusedReconstructionLoss`, few passes over the pixels);
`pixel_loss` and `spectral_angle_loss` below are the same terms written plainly, for reading and
for the tests that hold the fused version to them.

Letters: b batch, c bands, n patches, p patch pixels (k*k).
"""
from __future__ import annotations

import torch
from einops import rearrange, reduce
from torch import Tensor

from specaware.model.conditioning import band_scale
from specaware.model.config import LossConfig
from specaware.model.fused_loss import FusedReconstructionLoss


def loss_weights(valid: Tensor, mask: Tensor | None) -> Tensor:
    """bool [b, c, n, p]: valid target pixel of a real band inside a masked patch
    (mask None: every given patch counts, e.g. patches already gathered to the masked ones)."""
    return valid if mask is None else valid & rearrange(mask, "b n -> b 1 n 1")


def pixel_loss(pred: Tensor, target: Tensor, weight: Tensor, cfg: LossConfig) -> Tensor:
    """Mean Charbonnier or squared error over the elements where `weight` (bool) is True
    (0 if there are none). The plain formula; training uses the fused equivalent."""
    diff = pred - target
    if cfg.pixel == "charbonnier":
        err = torch.sqrt(diff.square() + cfg.charbonnier_eps ** 2)
    elif cfg.pixel == "mse":
        err = diff.square()
    else:
        raise ValueError(f"config key 'loss.pixel': {cfg.pixel!r} is not 'charbonnier' or 'mse'")
    return torch.where(weight, err, 0.0).sum() / weight.sum().clamp_min(1)


def spectral_angle_loss(pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Mean over pixels of 1 - cosine over the weighted bands; pred/target [b, c, n, p]
    physical units, weight bool [b, c, n, p]. The plain formula (see the module doc)."""
    pred, target = pred * weight, target * weight
    tiny = 1e-12
    dot = reduce(pred * target, "b c n p -> b n p", "sum")
    pred_norm = torch.sqrt(torch.linalg.vector_norm(pred, dim=1).square() + tiny)
    target_sq = torch.linalg.vector_norm(target, dim=1).square()
    counted = target_sq > tiny                     # pixels with a spectrum to compare with
    cos = dot / (pred_norm * torch.sqrt(target_sq + tiny))
    return ((1.0 - cos) * counted).sum() / counted.sum().clamp_min(1)


def reconstruction_loss(pred_std: Tensor, target_patches: Tensor, target_valid: Tensor,
                        stats: dict[str, Tensor], mask: Tensor | None,
                        cfg: LossConfig, zeroed: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
    """pred_std [b, c, n, p] standardised prediction; target_patches/valid [b, c, n, p];
    stats: `target_norm.target_statistics` (visible patches of the target); mask bool [b, n] True = hidden patch, or None
    when the patches given are the hidden ones already (`MaskedAutoencoder` gathers them first,
    so the pixels of visible patches are never touched here). zeroed: target_patches are
    already 0 wherever target_valid is False (as `BandInputs.patches` are), which saves a pass.
    Returns (total, {"sam": ..., "charbonnier"|"mse": ...})."""
    if cfg.pixel not in ("charbonnier", "mse"):
        raise ValueError(f"config key 'loss.pixel': {cfg.pixel!r} is not 'charbonnier' or 'mse'")
    weight = loss_weights(target_valid, mask)
    mean, std = (rearrange(t, "b c 1 1 -> b c 1") for t in band_scale(stats))
    flat = "b c n p -> b c (n p)"
    total, pix, sam = FusedReconstructionLoss.apply(
        rearrange(pred_std.float(), flat), rearrange(target_patches.float(), flat),
        rearrange(weight, flat), mean.float(), std.float(), cfg.pixel, cfg.charbonnier_eps,
        cfg.pixel_weight, cfg.sam_weight, zeroed and mask is None)
    return total, {"sam": sam, cfg.pixel: pix}
