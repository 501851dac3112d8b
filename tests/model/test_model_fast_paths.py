"""The fast paths of a training step compute what the plain formulas compute.

The loss gathers the hidden patches before anything else and uses fused one-pass ops; here a
dense reference (float masks over ALL patches, written the direct way) checks value and gradient.
"""
from __future__ import annotations

import math

import pytest
import torch
from einops import rearrange

import specaware
from specaware.model.conditioning import band_statistics, standardise
from specaware.model.config import LossConfig
from specaware.model.fused_loss import FusedReconstructionLoss
from specaware.model.loss import pixel_loss, reconstruction_loss, spectral_angle_loss
from specaware.model.masking import gather_patches, hidden_indices, random_masking, unpatchify
from specaware.model.target_norm import destandardise, pooled_statistics
from tests.model.batches import pad_batch, sample


def dense_reference_loss(pred_std, target, valid, mask, cfg: LossConfig,
                         visible_statistics: bool = False):
    """The loss the direct way: every patch, float weights, no fused ops. The statistics are
    those of every valid pixel, or of the visible patches' (as the model takes them)."""
    w = (valid & rearrange(mask, "b n -> b 1 n 1")).float()
    vf = (valid & ~rearrange(mask, "b n -> b 1 n 1")).float() if visible_statistics \
        else valid.float()
    count = vf.sum((2, 3))
    mean = (target * vf).sum((2, 3)) / count.clamp_min(1.0)
    var = (((target - mean[..., None, None]) * vf) ** 2).sum((2, 3)) / count.clamp_min(1.0)
    real = (count > 0).float()
    bright = (mean.abs() * real).sum(1) / real.sum(1).clamp_min(1.0)
    if cfg.target_norm == "sample":          # one mean and std over every valid pixel and band
        total = vf.sum((1, 2, 3)).clamp_min(1.0)
        pooled = (target * vf).sum((1, 2, 3)) / total
        var = (((target - pooled[:, None, None, None]) * vf) ** 2).sum((1, 2, 3)) / total
        mean, var = pooled[:, None].expand_as(mean), var[:, None].expand_as(mean)
    std = torch.maximum(var.sqrt(), 0.01 * bright[:, None] + 1e-6)[..., None, None]
    mean = mean[..., None, None]
    target_std = (target - mean) / std * valid
    diff = pred_std - target_std
    err = (diff ** 2 + cfg.charbonnier_eps ** 2).sqrt() if cfg.pixel == "charbonnier" else diff ** 2
    pix = (err * w).sum() / w.sum().clamp_min(1.0)
    p, t = (pred_std * std + mean) * w, target * w
    dot, pn, tn = (p * t).sum(1), ((p ** 2).sum(1) + 1e-12).sqrt(), (t ** 2).sum(1)
    counted = (tn > 1e-12).float()
    sam = ((1 - dot / (pn * (tn + 1e-12).sqrt())) * counted).sum() / counted.sum().clamp_min(1.0)
    return pix + sam


def test_loss_on_gathered_hidden_patches_equals_dense_loss():
    gen = torch.Generator().manual_seed(3)
    b, c, n, p = 2, 6, 16, 4
    target = torch.rand(b, c, n, p, generator=gen) + 0.2
    valid = torch.rand(b, c, n, p, generator=gen) > 0.1
    valid[1, 5] = False                                        # a padded band
    target = target * valid
    keep, mask = random_masking(b, n, 0.75, "cpu", gen)
    for pixel in ("charbonnier", "mse"):
        cfg = LossConfig(pixel=pixel, target_norm="band")   # band_statistics below
        pred = torch.randn(b, c, n, p, generator=gen, requires_grad=True)
        want = dense_reference_loss(pred, target, valid, mask, cfg)
        (want_grad,) = torch.autograd.grad(want, pred)
        hidden = hidden_indices(mask, n - keep.shape[1])
        stats = band_statistics(target, valid, valid.any(-1).any(-1))
        got, _ = reconstruction_loss(gather_patches(pred, hidden), gather_patches(target, hidden),
                                     gather_patches(valid, hidden), stats, None, cfg,
                                     zeroed=pixel == "mse")          # target is 0 at invalid
        (got_grad,) = torch.autograd.grad(got, pred)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got_grad, want_grad, rtol=1e-4, atol=1e-7)


def test_hidden_indices_list_the_masked_patches_in_order():
    keep, mask = random_masking(3, 20, 0.75, "cpu", torch.Generator().manual_seed(0))
    hidden = hidden_indices(mask, 15)
    for row, m in zip(hidden, mask):
        assert row.tolist() == m.nonzero()[:, 0].tolist()


@pytest.mark.parametrize("norm", ["sample", "band"])
def test_pred_is_the_head_on_every_patch(norm):
    torch.manual_seed(0)
    mae = specaware.create_model("specaware_debug", loss={"target_norm": norm}).eval()
    batch = pad_batch([sample(9, seed=1), sample(6, seed=2)])
    out = mae(batch, generator=torch.Generator().manual_seed(0))
    inputs = mae.encoder.prepare(batch)
    keep, mask = random_masking(2, inputs.num_patches, mae.config.mask_ratio, "cpu",
                                torch.Generator().manual_seed(0))
    assert torch.equal(mask, out.mask)
    pred_std, _ = mae.forward_decoder(mae.forward_encoder(inputs, keep), inputs, inputs)
    # target statistics of the visible patches (every real band has valid pixels there)
    stats = band_statistics(gather_patches(inputs.patches, keep),
                            gather_patches(inputs.valid, keep), inputs.band_mask)
    assert bool((stats["valid_frac"] > 0)[inputs.band_mask].all())
    if norm == "sample":
        stats = pooled_statistics(stats, inputs.band_mask)
    want = unpatchify(destandardise(pred_std, stats), 8, inputs.grid[1])
    assert not out.pred.requires_grad
    torch.testing.assert_close(out.pred, want.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pixel", ["charbonnier", "mse"])
def test_fused_loss_gradient_passes_gradcheck(pixel):
    gen = torch.Generator().manual_seed(5)
    b, c, q = 2, 4, 6
    pred = torch.randn(b, c, q, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.rand(b, c, q, generator=gen, dtype=torch.float64) + 0.1
    valid = torch.rand(b, c, q, generator=gen) > 0.2
    valid[1, :, 0] = False                                      # a pixel with no spectrum
    mean = torch.rand(b, c, 1, generator=gen, dtype=torch.float64)
    std = torch.rand(b, c, 1, generator=gen, dtype=torch.float64) + 0.5

    def parts(p):
        total, pix, sam = FusedReconstructionLoss.apply(p, target, valid, mean, std, pixel,
                                                        1e-3, 0.7, 1.3)
        return total, pix, sam
    assert torch.autograd.gradcheck(parts, (pred,))


def test_fused_loss_is_zero_with_no_valid_pixel():
    pred = torch.randn(1, 3, 8, 4, requires_grad=True)
    target = torch.rand(1, 3, 8, 4)
    valid = torch.zeros(1, 3, 8, 4, dtype=torch.bool)
    stats = band_statistics(target, valid, torch.ones(1, 3, dtype=torch.bool))
    loss, parts = reconstruction_loss(pred, target, valid, stats, None, LossConfig())
    loss.backward()
    assert loss.item() == 0.0 and parts["charbonnier"].item() == 0.0
    assert (pred.grad == 0).all()


def test_fused_loss_equals_the_plain_terms():
    gen = torch.Generator().manual_seed(2)
    b, c, n, p = 2, 5, 6, 4
    target = (torch.rand(b, c, n, p, generator=gen) + 0.1)
    valid = torch.rand(b, c, n, p, generator=gen) > 0.15
    stats = band_statistics(target, valid, valid.any(-1).any(-1))
    pred = torch.randn(b, c, n, p, generator=gen, requires_grad=True)
    cfg = LossConfig(pixel_weight=0.5, sam_weight=2.0)
    got, parts = reconstruction_loss(pred, target, valid, stats, None, cfg)
    pix = pixel_loss(pred, standardise(target, valid, stats), valid, cfg)
    sam = spectral_angle_loss(destandardise(pred, stats), target, valid)
    want = 0.5 * pix + 2.0 * sam
    torch.testing.assert_close(parts["charbonnier"], pix)
    torch.testing.assert_close(parts["sam"], sam)
    torch.testing.assert_close(torch.autograd.grad(got, pred)[0],
                               torch.autograd.grad(want, pred)[0], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("bad", [float("inf"), -float("inf"), float("nan")])
def test_prepare_marks_non_finite_pixels_invalid(bad):
    mae = specaware.create_model("specaware_debug")
    batch = pad_batch([sample(5)])
    clean = mae.encoder.prepare(batch)
    assert clean.valid.all()
    batch["image"][0, 2, 3, 4] = bad
    inputs = mae.encoder.prepare(batch)
    assert (~inputs.valid).sum() == 1 and torch.isfinite(inputs.patches).all()
    assert inputs.patches.abs().sum() < clean.patches.abs().sum()


def test_band_statistics_of_zeroed_inputs_skip_nothing_that_matters():
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 5, 4, generator=gen)
    valid = torch.rand(2, 3, 5, 4, generator=gen) > 0.3
    band_mask = torch.ones(2, 3, dtype=torch.bool)
    full = band_statistics(x + 9.0 * ~valid, valid, band_mask)         # junk at invalid pixels
    fast = band_statistics(x * valid, valid, band_mask, zeroed=True)
    for key in full:
        torch.testing.assert_close(fast[key], full[key])


def test_gather_patches_equals_torch_gather_and_passes_gradients():
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(3, 5, 12, 4, generator=gen, requires_grad=True)
    keep, _ = random_masking(3, 12, 0.5, "cpu", gen)
    index = keep[:, None, :, None].expand(3, 5, keep.shape[1], 4)
    torch.testing.assert_close(gather_patches(x, keep), torch.gather(x, 2, index), rtol=0, atol=0)
    (grad,) = torch.autograd.grad(gather_patches(x, keep).sum(), x)
    assert grad.sum() == 3 * 5 * keep.shape[1] * 4 and grad.max() == 1


@pytest.mark.parametrize("norm", ["sample", "band"])
def test_model_loss_and_gradients_equal_the_dense_formula(norm):
    torch.manual_seed(0)
    mae = specaware.create_model("specaware_debug", loss={"target_norm": norm}).eval()
    s = sample(9, seed=1)
    s["valid"][:, 3:6, 2:12] = False
    batch = pad_batch([s, sample(6, seed=2)])
    out = mae(batch, generator=torch.Generator().manual_seed(0))
    inputs = mae.encoder.prepare(batch)
    keep, mask = random_masking(2, inputs.num_patches, mae.config.mask_ratio, "cpu",
                                torch.Generator().manual_seed(0))
    pred_std, _ = mae.forward_decoder(mae.forward_encoder(inputs, keep), inputs, inputs)
    want = dense_reference_loss(pred_std, inputs.patches, inputs.valid, mask, mae.config.loss,
                                visible_statistics=True)
    params = [p for p in mae.parameters() if p.requires_grad]
    got_grads = torch.autograd.grad(out.loss, params, allow_unused=True)
    want_grads = torch.autograd.grad(want, params, allow_unused=True)
    torch.testing.assert_close(out.loss, want, rtol=1e-5, atol=1e-6)
    for got, ref in zip(got_grads, want_grads):
        assert (got is None) == (ref is None)
        if got is not None:
            torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("pixel", ["mse", "charbonnier"])
def test_fused_pixel_term_of_a_single_valid_element_is_its_own_error(pixel):
    pred = torch.tensor([[[1.5, 9.0]]], dtype=torch.float64)       # [b, c, q]
    target = torch.tensor([[[3.0, 7.0]]], dtype=torch.float64)
    valid = torch.tensor([[[True, False]]])
    mean = torch.full((1, 1, 1), 1.0, dtype=torch.float64)
    std = torch.full((1, 1, 1), 4.0, dtype=torch.float64)
    _, pix, _ = FusedReconstructionLoss.apply(pred, target, valid, mean, std, pixel, 1e-3, 1.0,
                                              0.0)
    diff = 1.5 - (3.0 - 1.0) / 4.0                              # standardised target
    want = diff ** 2 if pixel == "mse" else math.sqrt(diff ** 2 + 1e-3 ** 2)
    assert pix.item() == pytest.approx(want, rel=1e-12)


def test_a_clean_cpu_batch_is_prepared_without_a_masked_copy_of_its_pixels():
    """The CPU fast path: finite pixels, all valid -> no masked copy of the image and no
    elementwise finiteness mask; one NaN takes the general path, which needs both."""
    from specaware.model.flops import peak_cpu_memory
    mae = specaware.create_model("specaware_debug")
    batch = pad_batch([sample(8, size=64)])
    clean = peak_cpu_memory(lambda: mae.encoder.prepare(batch))
    batch["image"][0, 0, 0, 0] = float("nan")
    dirty = peak_cpu_memory(lambda: mae.encoder.prepare(batch))
    assert dirty - clean >= batch["image"].numel() * 4        # at least one float32 image more
