"""Masked autoencoder: masking, loss bookkeeping, cross-sensor target, robustness, determinism."""
import math

import pytest
import torch

import specaware
from specaware.model.config import LossConfig
from specaware.model.conditioning import band_statistics
from specaware.model.loss import pixel_loss, reconstruction_loss, spectral_angle_loss
from specaware.model.masking import random_masking
from tests.model.batches import pad_batch, sample


@pytest.fixture(scope="module")
def mae():
    torch.manual_seed(0)
    return specaware.create_model("specaware_debug").eval()


def run(mae, batch, seed=0, **kw):
    return mae(batch, generator=torch.Generator().manual_seed(seed), **kw)


def test_output_fields_and_mask_ratio(mae):
    batch = pad_batch([sample(12, size=32, seed=1), sample(5, size=32, seed=2)])
    out = run(mae, batch)
    assert out.pred.shape == (2, 12, 32, 32)
    assert out.mask.shape == (2, 16) and out.mask.dtype == torch.bool
    assert out.mask.sum(1).tolist() == [12, 12]          # 75% of 16 patches hidden per sample
    assert set(out.parts) == {"sam", "charbonnier"}
    total = out.parts["sam"] + out.parts["charbonnier"]
    torch.testing.assert_close(out.loss, total)
    assert all(k.startswith("encoder.block1.") for k in out.metrics)
    assert "encoder.block1.dispatch_entropy" in out.metrics


def test_mse_is_selectable_and_weights_apply():
    torch.manual_seed(0)
    mae = specaware.create_model("specaware_debug", loss={"pixel": "mse", "sam_weight": 0.5})
    out = run(mae, pad_batch([sample(6, seed=3)]))
    assert set(out.parts) == {"sam", "mse"}
    torch.testing.assert_close(out.loss, out.parts["mse"] + 0.5 * out.parts["sam"])


def test_padded_sample_in_mixed_batch_gives_same_loss_as_alone(mae):
    """Row 0 of the masking noise is the same for batch sizes 1 and 2 under one seed; the other
    sample is made all-invalid so it adds nothing to the loss, whatever its bands."""
    a, b = sample(9, seed=1), sample(17, seed=2, sensor="enmap")
    b["valid"][:] = False
    alone = run(mae, pad_batch([a]))
    mixed = run(mae, pad_batch([a, b]))
    assert torch.equal(mixed.mask[:1], alone.mask)
    torch.testing.assert_close(mixed.loss, alone.loss, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(mixed.pred[:1, :9], alone.pred, atol=1e-5, rtol=1e-4)


def test_invalid_pixels_and_padded_bands_contribute_nothing_to_loss(mae):
    s = sample(10, seed=7)
    s["valid"][2:4, 5:12, :] = False
    batch = pad_batch([s], bands=13)
    base = run(mae, batch)
    batch["image"][:, 2:4, 5:12, :] = 50.0             # invalid pixels
    batch["image"][:, 10:] = -7.0                      # padded bands
    changed = run(mae, batch)
    torch.testing.assert_close(changed.loss, base.loss)
    # and the same holds when those values sit in a separate target view
    target = dict(pad_batch([s], bands=13))
    cross = dict(batch, target=target)
    base_t = run(mae, cross)
    target["image"] = target["image"].clone()
    target["image"][:, 2:4, 5:12, :] = 50.0
    target["image"][:, 10:] = -7.0
    torch.testing.assert_close(run(mae, dict(batch, target=target)).loss, base_t.loss)


def test_loss_gradient_is_zero_at_visible_patches_invalid_pixels_and_padded_bands():
    gen = torch.Generator().manual_seed(0)
    b, c, n, p = 2, 5, 4, 16
    target = torch.rand(b, c, n, p, generator=gen)
    valid = torch.ones(b, c, n, p, dtype=torch.bool)
    valid[0, 4] = False                                   # padded band of sample 0
    valid[1, :, 2, :3] = False                            # invalid pixels
    mask = torch.tensor([[True, False, True, True], [False, True, True, False]])
    stats = band_statistics(target, valid, valid.any(-1).any(-1))
    pred = torch.randn(b, c, n, p, generator=gen, requires_grad=True)
    loss, parts = reconstruction_loss(pred, target, valid, stats, mask, LossConfig())
    loss.backward()
    counted = valid & mask[:, None, :, None]
    assert (pred.grad[~counted] == 0).all()
    assert (pred.grad[counted] != 0).float().mean() > 0.99
    assert parts["sam"] > 0 and parts["charbonnier"] > 0


def test_cross_sensor_target_returns_target_band_count(mae):
    source = pad_batch([sample(20, seed=1, sensor="aviris-ng"),
                        sample(14, seed=2, sensor="aviris-classic")])
    target = pad_batch([sample(7, seed=1, sensor="sentinel-2a", wl_range=(440, 2200)),
                        sample(4, seed=2, sensor="landsat-8", wl_range=(480, 2200))])
    out = run(mae, dict(source, target=target))
    assert out.pred.shape == (2, 7, 16, 16)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert mae.head.a_gen.weight.grad is not None
    mae.zero_grad()


def test_target_with_other_tile_size_is_a_clear_error(mae):
    source = pad_batch([sample(6, size=16)])
    target = pad_batch([sample(4, size=32)])
    with pytest.raises(ValueError, match=r"same samples and pixels as batch\['image'\]: image 1 "
                                         r"x grid \(2, 2\), target 1 x grid \(4, 4\)"):
        run(mae, dict(source, target=target))


def test_all_zero_bands_give_no_nan(mae):
    s = sample(8, seed=9)
    s["image"][[0, 3, 7]] = 0.0
    all_zero = sample(5, seed=10)
    all_zero["image"][:] = 0.0
    mae.train()
    out = run(mae, pad_batch([s, all_zero]))
    out.loss.backward()
    mae.eval()
    assert torch.isfinite(out.loss) and torch.isfinite(out.pred).all()
    assert all(torch.isfinite(p.grad).all() for p in mae.parameters() if p.grad is not None)
    mae.zero_grad()


def test_deterministic_under_a_seed():
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        mae = specaware.create_model("specaware_debug")
        outs.append(mae(pad_batch([sample(6, seed=1), sample(9, seed=2)])))
    assert torch.equal(outs[0].mask, outs[1].mask)
    assert torch.equal(outs[0].loss, outs[1].loss)
    torch.manual_seed(7)
    other = specaware.create_model("specaware_debug")(pad_batch([sample(6, seed=1)]))
    assert not torch.equal(other.loss, outs[0].loss)


def test_masking_is_per_sample_and_reproducible():
    keep, mask = random_masking(4, 64, 0.75, "cpu", torch.Generator().manual_seed(0))
    keep2, _ = random_masking(4, 64, 0.75, "cpu", torch.Generator().manual_seed(0))
    assert torch.equal(keep, keep2) and keep.shape == (4, 16)
    assert (mask.sum(1) == 48).all()
    assert len({tuple(k.tolist()) for k in keep}) == 4     # samples masked independently
    assert not mask.gather(1, keep).any()                  # kept patches are not masked


def test_spectral_angle_matches_hand_computation():
    pred = torch.tensor([1.0, 0.0, 1.0]).reshape(1, 3, 1, 1)
    target = torch.tensor([1.0, 1.0, 0.0]).reshape(1, 3, 1, 1)
    weight = torch.ones_like(pred, dtype=torch.bool)
    expected = 1 - 1 / (math.sqrt(2) * math.sqrt(2))        # cos = 1 / 2
    assert spectral_angle_loss(pred, target, weight).item() == pytest.approx(expected, abs=1e-6)
    weight[0, 2] = False                                    # drop band 2: vectors [1,0], [1,1]
    expected = 1 - 1 / math.sqrt(2)
    assert spectral_angle_loss(pred, target, weight).item() == pytest.approx(expected, abs=1e-6)


def test_charbonnier_and_mse_match_hand_computation():
    pred, target = torch.tensor([0.0, 3.0, 100.0]), torch.tensor([0.0, 0.0, 0.0])
    weight = torch.tensor([True, True, False])
    cfg = LossConfig(charbonnier_eps=1e-3)
    expected = (1e-3 + math.sqrt(9 + 1e-6)) / 2
    assert pixel_loss(pred, target, weight, cfg).item() == pytest.approx(expected, rel=1e-6)
    assert pixel_loss(pred, target, weight, LossConfig(pixel="mse")).item() == pytest.approx(4.5)


def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    mae = specaware.create_model("specaware_debug")
    batch = pad_batch([sample(10, size=32, seed=1), sample(6, size=32, seed=2)])
    opt = torch.optim.AdamW(mae.parameters(), lr=3e-3)
    losses = []
    for step in range(25):
        out = mae(batch, generator=torch.Generator().manual_seed(step % 2))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4, losses


def test_pooled_statistics_are_those_of_every_valid_pixel_of_the_real_bands():
    from specaware.model.target_norm import pooled_statistics
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(2, 5, 4, 9, generator=gen) * torch.arange(1.0, 6.0).reshape(1, 5, 1, 1)
    valid = torch.rand(2, 5, 4, 9, generator=gen) > 0.3
    band_mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    valid &= band_mask[:, :, None, None]
    pooled = pooled_statistics(band_statistics(x, valid, band_mask), band_mask)
    for i in range(2):
        values = x[i][valid[i]].double()
        assert pooled["mean"][i].tolist() == pytest.approx([values.mean().item()] * 5, rel=1e-5)
        assert pooled["std"][i].tolist() == pytest.approx(
            [values.std(unbiased=False).item()] * 5, rel=1e-4)


@pytest.mark.parametrize("norm", ["band", "sample"])
def test_target_norm_decides_which_rescalings_of_the_target_leave_the_loss_unchanged(norm):
    """The encoder sees the same input; only the (cross-sensor) target is rescaled. Per-band
    normalisation hands the prediction each band's level, so scaling one band changes nothing;
    per-sample normalisation keeps the spectrum's shape in the target, so it does, while scaling
    the whole sample still does not (radiance vs reflectance units)."""
    torch.manual_seed(0)
    mae = specaware.create_model("specaware_debug", loss={"target_norm": norm, "sam_weight": 0.0})
    source = pad_batch([sample(12, size=32, seed=1)])
    target = pad_batch([sample(9, size=32, seed=2)])

    def loss(scale):
        t = dict(target, image=target["image"] * scale)
        return run(mae, dict(source, target=t)).loss

    base = loss(1.0)
    torch.testing.assert_close(loss(7.0), base, rtol=1e-4, atol=1e-5)
    one_band = torch.ones(1, 9, 1, 1)
    one_band[0, 3] = 5.0
    if norm == "band":
        torch.testing.assert_close(loss(one_band), base, rtol=1e-4, atol=1e-5)
    else:
        assert abs(loss(one_band).item() - base.item()) > 1e-2
