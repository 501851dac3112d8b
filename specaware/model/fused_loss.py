"""The reconstruction loss as one autograd node with a hand-written gradient.

Why: on the CPU a training step of a small SpecAware model is bound by passes over the
[b, c, n_hidden, p] pixel tensors of the loss, not by matmuls. Written with ordinary ops the
loss and its autograd graph make ~35 such passes (masks, casts, each elementwise op and its
backward); here the forward makes ~12 and the backward 5, and nothing of the graph but the
tensors the gradient needs is kept. It computes exactly the loss of `loss.py`'s reference
functions (`pixel_loss`, `spectral_angle_loss`; a test compares value and gradient).

Per element, with v = valid, m / s = band mean / std (no gradient: they are target statistics):
    pixel term  diff = v * (pred - (target - m) / s)
                Charbonnier: hypot(diff, eps),  d/dpred = diff / hypot(diff, eps)
                MSE:         diff^2,            d/dpred = 2 diff
    spectral    P = v * (pred s + m)  (physical units),  T = v * target
                per pixel over bands: cos = <P, T> / (|P| |T|)  (norms with +1e-12 inside)
                d(1 - cos)/dP = -T / (|P| |T|) + cos P / |P|^2,  dP/dpred = s at valid pixels.
Both gradients are zero at invalid pixels without any extra masking (diff, P and T are).

Letters: b batch, c bands, q pixels of the hidden patches (n_hidden * p).
"""
from __future__ import annotations

import torch
from torch import Tensor

TINY = 1e-12


def _pixel_term(diff: Tensor, count: Tensor, pixel: str, eps: float):
    """Mean pixel error over the `count` valid elements (diff is 0 elsewhere) and the per-element
    derivative of the sum (None for MSE: 2 diff, formed in the backward pass)."""
    n = count.clamp_min(1).to(diff.dtype)
    if pixel == "mse":
        return torch.linalg.vector_norm(diff).square() / n, None
    hyp = torch.hypot(diff, diff.new_tensor(eps))
    # invalid elements hold hypot(0, eps) = eps exactly: take them out after summing rows in
    # float32 and the rest in float64, so a tile with few valid pixels keeps its precision
    # (a float64 sum of the whole tensor would first copy it to float64)
    total = hyp.sum(dim=-1).double().sum() - eps * (diff.numel() - count).double()
    return (total.to(diff.dtype) / n) * (count > 0), hyp


class FusedReconstructionLoss(torch.autograd.Function):
    """(pred [b, c, q], target [b, c, q], valid bool [b, c, q], mean, std [b, c, 1]) ->
    (total, pixel part, spectral-angle part), all scalars; gradient for pred only."""

    @staticmethod
    def forward(ctx, pred: Tensor, target: Tensor, valid: Tensor, mean: Tensor, std: Tensor,
                pixel: str, eps: float, pixel_weight: float, sam_weight: float,
                target_zeroed: bool = False):
        zero = pred.new_zeros(())
        if not target_zeroed:             # True: the caller's target is 0 where valid is False
            target = torch.where(valid, target, zero)
        scale = 1.0 / std
        diff = torch.where(valid, pred - torch.addcmul(-mean * scale, target, scale), zero)
        count = torch.count_nonzero(valid)        # no int64 copy of the mask, unlike sum()
        pix, hyp = _pixel_term(diff, count, pixel, eps)
        phys = torch.where(valid, torch.addcmul(mean, pred, std), zero)
        dot = (phys * target).sum(dim=1, keepdim=True)                       # [b, 1, q]
        # (x * x).sum over bands: vector_norm along a non-innermost axis is ~3x slower on CPU
        pred_norm = torch.sqrt((phys * phys).sum(dim=1, keepdim=True) + TINY)
        target_sq = (target * target).sum(dim=1, keepdim=True)
        counted = target_sq > TINY                   # pixels with a spectrum to compare with
        cos = dot / (pred_norm * torch.sqrt(target_sq + TINY))
        num_counted = counted.sum().clamp_min(1).to(pred.dtype)
        sam = ((1.0 - cos) * counted).sum() / num_counted
        ctx.save_for_backward(diff, hyp, phys, target, std, pred_norm, target_sq, cos, counted,
                              count, num_counted)
        ctx.pixel, ctx.weights = pixel, (pixel_weight, sam_weight)
        return pixel_weight * pix + sam_weight * sam, pix, sam

    @staticmethod
    def backward(ctx, g_total: Tensor, g_pix: Tensor, g_sam: Tensor):
        diff, hyp, phys, target, std, pred_norm, target_sq, cos, counted, count, num_counted = (
            ctx.saved_tensors)
        pixel_weight, sam_weight = ctx.weights
        g_pix = (g_total * pixel_weight + g_pix) / count.clamp_min(1).to(diff.dtype)
        g_sam = (g_total * sam_weight + g_sam) / num_counted
        if ctx.pixel == "mse":
            grad = diff * (2.0 * g_pix)
        else:
            grad = torch.div(diff, hyp).mul_(g_pix)
        pixels = g_sam * counted / pred_norm                                  # [b, 1, q]
        alpha = -pixels / torch.sqrt(target_sq + TINY)
        beta = pixels * cos / pred_norm
        grad_phys = torch.mul(target, alpha).addcmul_(phys, beta)
        grad.addcmul_(grad_phys, std)
        return grad, None, None, None, None, None, None, None, None, None
