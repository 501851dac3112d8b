"""What the MAE loss may see (issue 16 item 3, issue 23).

- The prediction side of the loss (the head's output and the statistics it is de-standardised
  with) depends on no hidden target pixel.
- The loss covers the hidden patches only: reshuffling the visible target pixels (which keeps
  the visible-patch statistics) leaves it unchanged.
"""
import pytest
import torch

import specaware
import specaware.model.mae as mae_module
from tests.model.batches import pad_batch, sample

PATCH = 8
LOSS = mae_module.reconstruction_loss


def model(norm: str):
    torch.manual_seed(0)
    return specaware.create_model("specaware_debug", loss={"target_norm": norm}).eval()


def patch_pixels(mask: torch.Tensor, size: int) -> torch.Tensor:
    """bool [b, n] over patches -> bool [b, 1, H, W] over their pixels."""
    grid = size // PATCH
    m = mask.reshape(mask.shape[0], 1, grid, grid)
    return m.repeat_interleave(PATCH, 2).repeat_interleave(PATCH, 3)


def captured_run(mae, batch, monkeypatch):
    """Forward with a fixed mask; returns (output, the arguments the loss was called with)."""
    seen = {}

    def spy(pred_std, target_patches, target_valid, stats, *args, **kw):
        seen.update(pred=pred_std.detach().clone(), target=target_patches.clone(),
                    mean=stats["mean"].clone(), std=stats["std"].clone())
        return LOSS(pred_std, target_patches, target_valid, stats, *args, **kw)

    monkeypatch.setattr(mae_module, "reconstruction_loss", spy)
    with torch.no_grad():
        out = mae(batch, generator=torch.Generator().manual_seed(2))
    return out, seen


def views(cross: bool):
    batch = pad_batch([sample(12, size=32, seed=1), sample(9, size=32, seed=2)])
    if cross:
        batch["target"] = pad_batch([sample(20, size=32, seed=3, sensor="enmap"),
                                     sample(20, size=32, seed=4, sensor="enmap")])
    return batch


@pytest.mark.parametrize("norm", ["sample", "band"])
@pytest.mark.parametrize("cross", [False, True], ids=["same-view", "cross-sensor"])
def test_hidden_target_pixels_change_no_input_of_the_prediction_path(norm, cross,
                                                                      monkeypatch):
    mae = model(norm)
    batch = views(cross)
    out, before = captured_run(mae, batch, monkeypatch)
    changed = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}
    view = changed
    if cross:
        view = changed["target"] = dict(batch["target"])
    hidden = patch_pixels(out.mask, 32)
    view["image"] = torch.where(hidden, view["image"] * 1.7 + 0.2, view["image"])
    out2, after = captured_run(mae, changed, monkeypatch)
    assert torch.equal(out2.mask, out.mask)
    assert not torch.equal(after["target"], before["target"])      # the target did change
    assert float((out2.loss - out.loss).abs()) > 1e-3
    torch.testing.assert_close(after["pred"], before["pred"], atol=0, rtol=0)
    torch.testing.assert_close(after["mean"], before["mean"], atol=0, rtol=0)
    torch.testing.assert_close(after["std"], before["std"], atol=0, rtol=0)


def shuffle_within(image: torch.Tensor, where: torch.Tensor, seed: int) -> torch.Tensor:
    """Permute, per sample and band, the pixel values inside `where` [b, 1, H, W] among
    themselves: every band keeps its multiset of values there, hence its mean and std."""
    gen = torch.Generator().manual_seed(seed)
    out = image.clone()
    for i in range(image.shape[0]):
        idx = where[i, 0].flatten().nonzero().squeeze(1)
        perm = idx[torch.randperm(len(idx), generator=gen)]
        flat = out[i].reshape(image.shape[1], -1)
        flat[:, idx] = image[i].reshape(image.shape[1], -1)[:, perm]
    return out


@pytest.mark.parametrize("norm", ["sample", "band"])
def test_reshuffled_visible_target_pixels_leave_the_loss_unchanged(norm, monkeypatch):
    """Cross-sensor target (the encoder input stays the same). Shuffling the target's visible
    pixels keeps the visible-patch statistics, so only a loss term over visible patches could
    move; shuffling the hidden pixels the same way must move it."""
    mae = model(norm)
    batch = views(cross=True)
    out, _ = captured_run(mae, batch, monkeypatch)
    for where, should_change in ((~out.mask, False), (out.mask, True)):
        target = dict(batch["target"])
        target["image"] = shuffle_within(target["image"], patch_pixels(where, 32), seed=5)
        moved, _ = captured_run(mae, {**batch, "target": target}, monkeypatch)
        delta = float((moved.loss - out.loss).abs())
        if should_change:
            assert delta > 1e-3
        else:
            assert delta < 1e-5 * float(out.loss), f"loss moved by {delta:.2e}"
